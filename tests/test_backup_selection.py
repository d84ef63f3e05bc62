"""Which files are backups, and where a restore may write.

Only the names ``backup()`` writes (``backup-<UTC stamp>.db``) are backups: a
user's own ``backup-before-upgrade.db`` in the same folder once counted as the
newest, so ``keep=1`` deleted the backup just written and ``restore DIR``
restored the user's old file. A restore beside a stale ``-wal`` made a file
that SQLite opened as malformed (it replays the stale log into it).
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from conftest import run_python
from sqlite_gateway.backup import backup, backups, restore

# Leaves app.db's -wal and -shm behind, as a crashed app does: committed frames not checkpointed.
CRASHED_APP = """
import os, sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL").fetchall()
conn.execute("PRAGMA wal_autocheckpoint=0").fetchall()
conn.execute("CREATE TABLE old(id INTEGER PRIMARY KEY, pad TEXT)")
with conn:
    conn.executemany("INSERT INTO old(pad) VALUES (?)", [("x" * 500,) for _ in range(200)])
os._exit(0)  # no close: no checkpoint, the -wal keeps every frame
"""

# The outside view of a database file: a child process reads it and prints what it saw.
READ = """
import sys, apsw
try:
    conn = apsw.Connection(sys.argv[1], flags=apsw.SQLITE_OPEN_READONLY)
    print(conn.execute("SELECT count(*), sum(v) FROM t").fetchall())
except apsw.Error as exc:
    print(type(exc).__name__, exc)
"""


def make_db(path: Path, rows: int) -> Path:
    conn = apsw.Connection(str(path))
    try:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
        with conn:
            conn.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(rows)])
    finally:
        conn.close()
    return path


def count(path: Path | str) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchall()[0][0])
    finally:
        conn.close()


@pytest.fixture
def folder_with_a_users_file(tmp_path: Path) -> Path:
    """A backup folder that already holds a file of the user's with a backup-like name."""
    folder = tmp_path / "b"
    folder.mkdir()
    make_db(folder / "backup-before-upgrade.db", rows=1)
    (folder / "backup-notes.db").write_text("not even a database")
    return folder


def test_keep_1_keeps_the_backup_just_written_and_never_the_users_file(
        tmp_path: Path, folder_with_a_users_file: Path) -> None:
    app = make_db(tmp_path / "app.db", rows=10)
    made, removed = backup(app, folder_with_a_users_file, keep=1)
    assert Path(made).exists() and removed == []
    assert backups(folder_with_a_users_file) == [Path(made)]
    again, removed = backup(app, folder_with_a_users_file, keep=1)
    assert removed == [made] and backups(folder_with_a_users_file) == [Path(again)]
    # The user's files are not backups: never counted, never deleted.
    assert (folder_with_a_users_file / "backup-before-upgrade.db").exists()
    assert (folder_with_a_users_file / "backup-notes.db").exists()


def test_restoring_a_folder_takes_the_newest_gateway_backup_not_the_users_file(
        tmp_path: Path, folder_with_a_users_file: Path) -> None:
    app = make_db(tmp_path / "app.db", rows=10)
    backup(app, folder_with_a_users_file, keep=3)
    restored = restore(folder_with_a_users_file, tmp_path / "r.db")
    assert count(restored) == 10  # the user's file has 1 row


def test_names_that_only_look_like_a_stamp_are_not_backups(tmp_path: Path) -> None:
    for name in ("backup-2026.db", "backup-20260101T000000000000.db.bak",
                 "backup-20260101T0000000000000.db", "xbackup-20260101T000000000000.db",
                 "backup-20260101T00000000000a.db"):
        make_db(tmp_path / name, rows=1)
    make_db(tmp_path / "backup-20260101T000000000000.db", rows=2)
    assert [p.name for p in backups(tmp_path)] == ["backup-20260101T000000000000.db"]


@pytest.fixture
def stale_sidecars(tmp_path: Path) -> Path:
    """app.db's path with a crashed app's -wal and -shm left beside it, and app.db gone."""
    app = tmp_path / "app.db"
    done = run_python(CRASHED_APP, str(app))
    assert done.returncode == 0, done.stderr
    app.unlink()
    assert Path(f"{app}-wal").stat().st_size > 0 and Path(f"{app}-shm").exists()
    return app


def test_a_plain_copy_beside_a_stale_wal_opens_as_malformed(
        tmp_path: Path, stale_sidecars: Path) -> None:
    """The control: what restore would have made (the copy itself is sound, the -wal is not)."""
    made, _ = backup(make_db(tmp_path / "src.db", rows=10), tmp_path / "b")
    assert run_python(READ, made).stdout.strip() == "[(10, 45)]"
    stale_sidecars.write_bytes(Path(made).read_bytes())
    seen = run_python(READ, str(stale_sidecars)).stdout
    assert "[(10, 45)]" not in seen, seen


def test_restore_refuses_a_path_with_stale_sidecars_and_says_what_to_do(
        tmp_path: Path, stale_sidecars: Path) -> None:
    made, _ = backup(make_db(tmp_path / "src.db", rows=10), tmp_path / "b")
    wal = Path(f"{stale_sidecars}-wal").read_bytes()
    with pytest.raises(FileExistsError) as refused:
        restore(made, stale_sidecars)
    text = str(refused.value)
    assert f"{stale_sidecars}-wal" in text and f"{stale_sidecars}-shm" in text
    assert "move them away" in text
    # Nothing written, nothing removed: the sidecars may still be someone's.
    assert not stale_sidecars.exists()
    assert Path(f"{stale_sidecars}-wal").read_bytes() == wal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db-shm", "app.db-wal", "b",
                                                          "src.db"]
    # Once they are moved away, the same restore works and a child process reads every row.
    for suffix in ("-wal", "-shm"):
        Path(f"{stale_sidecars}{suffix}").unlink()
    restore(made, stale_sidecars)
    assert run_python(READ, str(stale_sidecars)).stdout.strip() == "[(10, 45)]"


def test_a_stale_rollback_journal_is_refused_too(tmp_path: Path) -> None:
    made, _ = backup(make_db(tmp_path / "src.db", rows=3), tmp_path / "b")
    Path(f"{tmp_path / 'app.db'}-journal").write_bytes(b"\0" * 512)
    with pytest.raises(FileExistsError, match="app.db-journal is left"):
        restore(made, tmp_path / "app.db")
    assert not (tmp_path / "app.db").exists()
