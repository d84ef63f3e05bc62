"""What the ``sqlite-gateway`` backup commands say when a file is wrong.

The command once printed ``error: not an error`` for a backup with a damaged
header (SQLite's backup API reports the source's fault on the destination), and
``error: disk I/O error`` for a folder given as the database. Each message now
names the path and says what is wrong with it, and nothing is left behind.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from sqlite_gateway.backup import backup
from sqlite_gateway.cli import main


@pytest.fixture
def good_backup(tmp_path: Path) -> Path:
    app = tmp_path / "app.db"
    conn = apsw.Connection(str(app))
    try:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        with conn:
            conn.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 200,) for _ in range(100)])
    finally:
        conn.close()
    return Path(backup(app, tmp_path / "b")[0])


def damaged(good: Path, offset: int, tmp_path: Path) -> Path:
    """A copy of ``good`` with four bytes at ``offset`` overwritten."""
    data = bytearray(good.read_bytes())
    data[offset:offset + 4] = b"\xff\xff\xff\xff"
    path = tmp_path / f"damaged-{offset}.db"
    path.write_bytes(bytes(data))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0 or captured.out == ""  # a failure prints nothing on stdout
    return code, captured.err


def one_clear_line(err: str, path: Path | str) -> None:
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert str(path) in err, err
    assert "not an error" not in err and "disk I/O error" not in err, err
    assert "unable to open database file" not in err, err


@pytest.mark.parametrize("offset, says", [
    (0, "is not a SQLite database"),        # the magic string
    (16, "is not a SQLite database"),       # the page size
    (28, "is damaged"),                     # the page count
    (100, "is damaged"),                    # page 1's b-tree header
    (4096 + 8, "is damaged"),               # a table page
])
def test_a_damaged_backup_is_named_and_described(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, good_backup: Path,
        offset: int, says: str) -> None:
    bad = damaged(good_backup, offset, tmp_path)
    code, err = run(capsys, "restore", str(bad), "--to", str(tmp_path / "r.db"))
    assert code == 1
    one_clear_line(err, bad)
    assert says in err
    # Neither the new file nor its temporary copy is left behind.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".r.db", "r.db"))]


def test_the_control_an_intact_backup_restores(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, good_backup: Path) -> None:
    code, err = run(capsys, "restore", str(good_backup), "--to", str(tmp_path / "r.db"))
    assert (code, err) == (0, "") and (tmp_path / "r.db").is_file()


def test_a_folder_given_as_the_database_is_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "d.db").mkdir()
    code, err = run(capsys, "backup", str(tmp_path / "d.db"), "--dir", str(tmp_path / "b"))
    assert code == 1
    one_clear_line(err, tmp_path / "d.db")
    assert "is a folder, not a database file" in err
    assert not (tmp_path / "b").exists()


def test_a_missing_database_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "backup", str(tmp_path / "nope.db"), "--dir", str(tmp_path / "b"))
    assert code == 1
    one_clear_line(err, tmp_path / "nope.db")
    assert "no database file at" in err


def test_a_file_given_as_the_backup_folder_is_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, good_backup: Path) -> None:
    (tmp_path / "notes").write_text("x")
    code, err = run(capsys, "backup", str(good_backup), "--dir", str(tmp_path / "notes"))
    assert code == 1
    one_clear_line(err, tmp_path / "notes")
    assert "is a file, not a folder" in err


def test_a_folder_with_a_backup_name_is_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    odd = tmp_path / "b" / "backup-20260101T000000000000.db"
    odd.mkdir(parents=True)
    code, err = run(capsys, "restore", str(tmp_path / "b"), "--to", str(tmp_path / "r.db"))
    assert code == 1
    one_clear_line(err, odd)
    assert "is a folder, not a backup" in err


def test_a_restore_into_a_missing_folder_is_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, good_backup: Path) -> None:
    to = tmp_path / "nowhere" / "r.db"
    code, err = run(capsys, "restore", str(good_backup), "--to", str(to))
    assert code == 1
    one_clear_line(err, tmp_path / "nowhere")
    assert "no folder" in err
