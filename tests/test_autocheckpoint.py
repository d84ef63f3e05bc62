"""Gateway(autocheckpoint=N): the writer's wal_autocheckpoint, 0 = off (beside Litestream)."""

from __future__ import annotations

import os

import pytest

from sqlite_gateway import Gateway

PAGE = 4096


def wal_pages_after_small_commits(path: str, autocheckpoint: int, commits: int) -> int:
    """Commit ``commits`` one-page rows one by one; return the WAL file's size in pages."""
    with Gateway(path, autocheckpoint=autocheckpoint) as db:
        setting = db.run_exclusive(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0])
        assert setting == autocheckpoint
        db.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
        for _ in range(commits):
            db.execute("INSERT INTO blobs(b) VALUES (zeroblob(3000))")
        # Measured while the gateway is open: closing the last connection checkpoints.
        return os.path.getsize(path + "-wal") // PAGE


def test_default_checkpoints_and_zero_leaves_the_wal_to_grow(tmp_path):
    commits = 600  # at least one new page per commit
    default = wal_pages_after_small_commits(str(tmp_path / "default.db"), 100, commits)
    off = wal_pages_after_small_commits(str(tmp_path / "off.db"), 0, commits)
    # With checkpoints after ~100 pages the WAL is rewound and reused from its start.
    assert default < 300, default
    # Without them every commit appends: the WAL holds at least a page per commit.
    assert off >= commits, off


def test_the_default_is_sqlites(tmp_path):
    with Gateway(str(tmp_path / "app.db")) as db:
        assert db.run_exclusive(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0]) == 1000


@pytest.mark.parametrize("bad", [-1, True, 1.5, "0", None])
def test_a_bad_autocheckpoint_is_refused_clearly(tmp_path, bad):
    with pytest.raises(ValueError, match="autocheckpoint must be a whole number"):
        Gateway(str(tmp_path / "app.db"), autocheckpoint=bad)
