"""Database maintenance: ``PRAGMA optimize``, a PASSIVE WAL checkpoint, online backups.

``optimize`` and the checkpoint run through ``db.run_exclusive``: alone on the
writer, between batches, outside any transaction (DECISIONS 6). The checkpoint
can be switched off (``checkpoint=False``) for when Litestream owns
checkpointing.

Backups (:func:`backup`) use SQLite's online backup API from a separate
read-only connection, in one step: one read transaction, so the copy is a
consistent snapshot of the last commit before it started (WAL included), and
the writer goes on committing meanwhile. Each is written under a temporary
name as ``backup-YYYYmmddTHHMMSSffffff.db`` (UTC), fsynced and renamed, so a
backup file that exists is complete; only the newest ``keep`` are kept.
:func:`restore` copies one (or the newest in a folder) to a new database file
and checks its integrity. From a shell::

    python -m helpers.maintenance backup app.db --dir backups --keep 7
    python -m helpers.maintenance restore backups --to restored.db   # the newest
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
from pathlib import Path
from typing import Any

import apsw
from cherrypy.process.wspbus import Bus

from .periodic import PeriodicJob

PREFIX, SUFFIX = "backup-", ".db"


def run(db: Any, *, backup_dir: str | os.PathLike[str] | None = None, keep: int = 3,
        checkpoint: bool = True, optimize: bool = True) -> dict[str, Any]:
    """Optimize, checkpoint and back up ``db`` (a started Gateway); return what was done.

    Returns:
        ``{"optimized": bool, "checkpoint": (wal_frames, checkpointed) or None,
        "backup": path or None, "removed": [old backup paths deleted] or None}``.
    """
    _check_keep(keep)
    done: dict[str, Any] = {"optimized": False, "checkpoint": None}
    if optimize or checkpoint:
        done = db.run_exclusive(_maintain, checkpoint=checkpoint, optimize=optimize,
                                priority="background")
    done["backup"] = done["removed"] = None
    if backup_dir is not None:
        done["backup"], done["removed"] = backup(db.path, backup_dir, keep=keep)
    return done


def _maintain(conn: apsw.Connection, *, checkpoint: bool, optimize: bool) -> dict[str, Any]:
    done: dict[str, Any] = {"optimized": False, "checkpoint": None}
    if optimize:
        conn.execute("PRAGMA optimize").fetchall()
        done["optimized"] = True
    if checkpoint:
        done["checkpoint"] = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
    return done


def _check_keep(keep: object) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, not {keep!r}")


def backup(db_path: str | os.PathLike[str], backup_dir: str | os.PathLike[str], *,
           keep: int = 3) -> tuple[str, list[str]]:
    """Copy the database at ``db_path`` into a new backup file in ``backup_dir``,
    then delete all but the newest ``keep``; return (the new path, those deleted).

    Thread-safe; it never uses the gateway's writer, which goes on committing:
    the copy holds one read transaction on its own read-only connection, so it
    has every row committed before it started and nothing half-done. Returns
    once the file is complete and durable.
    """
    _check_keep(keep)
    directory = Path(backup_dir)
    directory.mkdir(parents=True, exist_ok=True)
    utc = datetime.timezone.utc  # noqa: UP017 - datetime.UTC needs Python 3.11
    stamp = datetime.datetime.now(utc).strftime("%Y%m%dT%H%M%S%f")
    target = directory / f"{PREFIX}{stamp}{SUFFIX}"
    tmp = directory / f".{target.name}.tmp"
    source = apsw.Connection(os.fspath(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        _copy(source, tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        source.close()
    os.replace(tmp, target)
    _fsync_dir(directory)
    return str(target), [str(p) for p in prune(directory, keep)]


def _copy(source: apsw.Connection, to_path: Path) -> None:
    """Copy ``source`` into a new file at ``to_path`` in one backup step, and fsync it.

    One step (-1: every page) is one read transaction on ``source``: a
    consistent snapshot. Steps of N pages would restart whenever another
    connection commits in between, which under load may never finish.
    """
    dest = apsw.Connection(str(to_path))
    try:
        with dest.backup("main", source, "main") as copy:
            copy.step(-1)
        dest.execute("PRAGMA journal_mode=DELETE").fetchall()  # one self-contained file
    finally:
        dest.close()
    fd = os.open(to_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backups(backup_dir: str | os.PathLike[str]) -> list[Path]:
    """The backups in ``backup_dir``, oldest first (timestamps sort by name)."""
    return sorted(Path(backup_dir).glob(f"{PREFIX}*{SUFFIX}"))


def prune(backup_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``backup_dir``; return those deleted."""
    found = backups(backup_dir)
    old = found[:-keep] if keep > 0 else found
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return old


def restore(backup_path: str | os.PathLike[str], to_path: str | os.PathLike[str]) -> str:
    """Copy a backup (or the newest backup in a folder) to a new database file at
    ``to_path``, check its integrity, and return its path.

    Stop the app before you put the restored file in the database's place
    (and remove the old ``-wal`` and ``-shm`` files with it).

    Raises:
        FileExistsError: ``to_path`` exists (restore never overwrites).
        FileNotFoundError: no such backup, or no backup in the folder.
        RuntimeError: ``PRAGMA integrity_check`` is not ``ok``.
    """
    to = Path(to_path)
    if to.exists():
        raise FileExistsError(f"will not overwrite {to}")
    source_path = Path(backup_path)
    if source_path.is_dir():
        found = backups(source_path)
        if not found:
            raise FileNotFoundError(f"no {PREFIX}*{SUFFIX} backup in {source_path}")
        source_path = found[-1]
    if not source_path.is_file():
        raise FileNotFoundError(str(source_path))
    tmp = to.with_name(f".{to.name}.tmp")
    source = apsw.Connection(str(source_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        _copy(source, tmp)
    finally:
        source.close()
    check = apsw.Connection(str(tmp))
    try:
        verdict = [row[0] for row in check.execute("PRAGMA integrity_check")]
    finally:
        check.close()
    if verdict != ["ok"]:
        tmp.unlink()
        raise RuntimeError(f"restored copy of {source_path} fails integrity_check: {verdict}")
    os.replace(tmp, to)
    _fsync_dir(to.parent)
    return str(to)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MaintenanceJob(PeriodicJob):
    """:func:`run` every ``interval`` seconds (default 3600)."""

    def __init__(self, bus: Bus, interval: float = 3600.0, name: str | None = "maintenance",
                 **settings: Any) -> None:
        settings.setdefault("backup_dir", None)
        settings.setdefault("keep", 3)
        settings.setdefault("checkpoint", True)
        settings.setdefault("optimize", True)
        super().__init__(bus, run, interval, name, **settings)


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.maintenance {backup,restore} ...``; exit code 1 with the reason."""
    parser = argparse.ArgumentParser(prog="python -m helpers.maintenance",
                                     description="Online backups of a SQLite database")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("backup", help="back up DB into a folder, keeping the newest N")
    make.add_argument("db")
    make.add_argument("--dir", required=True, help="the backup folder")
    make.add_argument("--keep", type=int, default=3)
    back = commands.add_parser("restore", help="restore a backup into a new database file")
    back.add_argument("backup", help="a backup file, or a folder (its newest backup)")
    back.add_argument("--to", required=True, help="the new database file (must not exist)")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            print(backup(args.db, args.dir, keep=args.keep)[0])
        else:
            print(restore(args.backup, args.to))
    except (OSError, RuntimeError, ValueError, apsw.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
