"""Backups and restores from the ``sqlite-gateway`` command, on a machine without CherryPy.

Each command runs in a child interpreter where importing cherrypy fails, as it
would where only the library is installed. (The backup itself under load, and
the maintenance job that calls it, are tested in test_helpers.py.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import apsw
import pytest

from conftest import run_python
from sqlite_gateway.backup import backups

NO_CHERRYPY = """
import sys

class NoCherryPy:
    def find_spec(self, name, path=None, target=None):
        if name == "cherrypy" or name.startswith("cherrypy."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NoCherryPy())
"""

# `python -m sqlite_gateway ARGS`, which is what the console script runs (cli.main).
COMMAND = NO_CHERRYPY + """
import runpy
sys.argv[0] = "sqlite-gateway"
runpy.run_module("sqlite_gateway", run_name="__main__", alter_sys=True)
"""


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python(COMMAND, *args)


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
        with conn:
            conn.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(100)])
    finally:
        conn.close()
    return path


def rows(path: Path | str) -> list[tuple[int, int]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [(a, b) for a, b in conn.execute("SELECT count(*), sum(v) FROM t")]
    finally:
        conn.close()


def test_the_blocker_really_hides_cherrypy() -> None:
    """The control: the same child cannot import the demo's jobs, which need CherryPy."""
    done = run_python(NO_CHERRYPY + "import helpers.maintenance")
    assert done.returncode == 1
    assert "No module named 'cherrypy' (blocked by the test)" in done.stderr


def test_backup_and_restore_work_without_cherrypy(app_db: Path, tmp_path: Path) -> None:
    made = []
    for _ in range(3):
        done = command("backup", str(app_db), "--dir", str(tmp_path / "b"), "--keep", "2")
        assert done.returncode == 0, done.stderr
        made.append(done.stdout.strip())
    assert [str(p) for p in backups(tmp_path / "b")] == made[-2:]  # the newest two kept
    done = command("restore", str(tmp_path / "b"), "--to", str(tmp_path / "r.db"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "r.db")
    assert rows(tmp_path / "r.db") == [(100, 4950)]
    one = command("restore", made[1], "--to", str(tmp_path / "one.db"))  # a file, too
    assert one.returncode == 0, one.stderr
    assert rows(tmp_path / "one.db") == [(100, 4950)]


def test_restore_refuses_to_overwrite_and_says_why(app_db: Path, tmp_path: Path) -> None:
    assert command("backup", str(app_db), "--dir", str(tmp_path / "b")).returncode == 0
    before = app_db.read_bytes()
    done = command("restore", str(tmp_path / "b"), "--to", str(app_db))
    assert done.returncode == 1 and done.stderr == f"error: will not overwrite {app_db}\n"
    assert app_db.read_bytes() == before


def test_bad_input_gets_one_line_and_exit_code_1(app_db: Path, tmp_path: Path) -> None:
    empty = command("restore", str(tmp_path), "--to", str(tmp_path / "x.db"))
    assert empty.returncode == 1 and "no backup in" in empty.stderr
    keep = command("backup", str(app_db), "--dir", str(tmp_path / "k"), "--keep", "0")
    assert keep.returncode == 1 and keep.stderr == "error: keep must be an int >= 1, not 0\n"
    assert not (tmp_path / "k").exists()  # checked before anything was written
    missing = command("backup", str(tmp_path / "nope.db"), "--dir", str(tmp_path / "m"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    assert not (tmp_path / "m").exists()  # nothing created for a wrong path
    usage = command("backup", str(app_db))  # --dir missing: argparse's usage error
    assert usage.returncode == 2 and "--dir" in usage.stderr


def test_a_backup_that_is_not_a_database_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "backup-20260101T000000000000.db").write_bytes(b"not a database" * 100)
    done = command("restore", str(tmp_path / "b"), "--to", str(tmp_path / "r.db"))
    assert done.returncode == 1 and done.stderr.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no r.db, no temp file
