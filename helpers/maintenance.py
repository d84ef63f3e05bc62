"""Database maintenance: ``PRAGMA optimize``, a PASSIVE WAL checkpoint, online backups.

All of it runs through ``db.run_exclusive``: alone on the writer, between
batches, outside any transaction (DECISIONS 6). The checkpoint can be switched
off (``checkpoint=False``) for when Litestream owns checkpointing.

Backups use SQLite's online backup API into ``backup-YYYYmmddTHHMMSSffffff.db``
(UTC), written under a temporary name and renamed, so a backup file that
exists is complete; only the newest ``keep`` are kept. :func:`restore` copies a
backup to a new database file and checks its integrity.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Any

import apsw
from cherrypy.process.wspbus import Bus

from .periodic import PeriodicJob

PREFIX, SUFFIX = "backup-", ".db"
PAGES_PER_STEP = 1024  # backup steps; the whole copy still runs inside one exclusive call


def run(db: Any, *, backup_dir: str | os.PathLike[str] | None = None, keep: int = 3,
        checkpoint: bool = True, optimize: bool = True) -> dict[str, Any]:
    """Optimize, checkpoint and back up ``db``; return what was done.

    Returns:
        ``{"optimized": bool, "checkpoint": (wal_frames, checkpointed) or None,
        "backup": path or None, "removed": [old backup paths deleted]}``.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, not {keep!r}")
    target = tmp = None
    if backup_dir is not None:
        directory = Path(backup_dir)
        directory.mkdir(parents=True, exist_ok=True)
        utc = datetime.timezone.utc  # noqa: UP017 - datetime.UTC needs Python 3.11
        stamp = datetime.datetime.now(utc).strftime("%Y%m%dT%H%M%S%f")
        target = directory / f"{PREFIX}{stamp}{SUFFIX}"
        tmp = directory / f".{target.name}.tmp"
    try:
        done: dict[str, Any] = db.run_exclusive(_maintain, tmp=tmp, checkpoint=checkpoint,
                                                optimize=optimize)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    done["backup"] = done["removed"] = None
    if target is not None and tmp is not None:
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        done["backup"] = str(target)
        done["removed"] = [str(p) for p in prune(target.parent, keep)]
    return done


def _maintain(conn: apsw.Connection, *, tmp: Path | None, checkpoint: bool,
              optimize: bool) -> dict[str, Any]:
    done: dict[str, Any] = {"optimized": False, "checkpoint": None}
    if optimize:
        conn.execute("PRAGMA optimize").fetchall()
        done["optimized"] = True
    if checkpoint:
        done["checkpoint"] = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
    if tmp is not None:
        _copy(conn, str(tmp))
    return done


def _copy(source: apsw.Connection, to_path: str) -> None:
    """Copy ``source`` into a new file at ``to_path`` with the backup API."""
    dest = apsw.Connection(to_path)
    try:
        with dest.backup("main", source, "main") as backup:
            # Bounded: each step copies PAGES_PER_STEP pages until done.
            while not backup.done:
                backup.step(PAGES_PER_STEP)
    finally:
        dest.close()


def prune(backup_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``backup_dir``; return those deleted."""
    backups = sorted(Path(backup_dir).glob(f"{PREFIX}*{SUFFIX}"))  # timestamps sort by name
    old = backups[:-keep] if keep > 0 else backups
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return old


def restore(backup_path: str | os.PathLike[str], to_path: str | os.PathLike[str]) -> str:
    """Copy a backup to a new database file at ``to_path`` and check its integrity.

    Raises:
        FileExistsError: ``to_path`` exists (restore never overwrites).
        RuntimeError: ``PRAGMA integrity_check`` is not ``ok``.
    """
    to = Path(to_path)
    if to.exists():
        raise FileExistsError(f"will not overwrite {to}")
    if not Path(backup_path).is_file():
        raise FileNotFoundError(str(backup_path))
    tmp = to.with_name(f".{to.name}.tmp")
    source = apsw.Connection(str(backup_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        _copy(source, str(tmp))
    finally:
        source.close()
    check = apsw.Connection(str(tmp))
    try:
        verdict = [row[0] for row in check.execute("PRAGMA integrity_check")]
    finally:
        check.close()
    if verdict != ["ok"]:
        tmp.unlink()
        raise RuntimeError(f"restored copy of {backup_path} fails integrity_check: {verdict}")
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
