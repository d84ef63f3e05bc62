"""Online backups of a SQLite database file, and restoring one; no web framework needed.

:func:`backup` uses SQLite's online backup API from its own read-only
connection, in one step: one read transaction, so the copy is a consistent
snapshot of the last commit before it started (WAL included), and a gateway's
writer goes on committing meanwhile. Each backup is written under a temporary
name as ``backup-YYYYmmddTHHMMSSffffff.db`` (UTC), fsynced and renamed, so a
backup file that exists is complete; only the newest ``keep`` are kept.
Only files named exactly that way are the gateway's backups: a file of yours in
the folder (``backup-before-upgrade.db``) is never counted, pruned or restored.
:func:`restore` copies one (or the newest in a folder) to a new database file
and checks its integrity. From a shell (``sqlite_gateway.cli``)::

    sqlite-gateway backup app.db --dir backups --keep 7
    sqlite-gateway restore backups --to restored.db   # the newest one
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from pathlib import Path

import apsw

__all__ = ["PREFIX", "SUFFIX", "backup", "backups", "check_keep", "prune", "restore"]

PREFIX, SUFFIX = "backup-", ".db"
# The exact names backup() writes: a fixed-width UTC stamp, so that name order is time order.
_NAME = re.compile(re.escape(PREFIX) + r"\d{8}T\d{12}" + re.escape(SUFFIX))
_NAME_HINT = f"{PREFIX}YYYYmmddTHHMMSSffffff{SUFFIX}"
# Files SQLite keeps beside a database: a stale one would be replayed into a new file there.
_SIDECARS = ("-wal", "-shm", "-journal")

StrPath = str | os.PathLike[str]


def check_keep(keep: object) -> None:
    """Raise ``ValueError`` unless ``keep`` (how many backups to keep) is an int >= 1."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, not {keep!r}")


def backup(db_path: StrPath, backup_dir: StrPath, *, keep: int = 3) -> tuple[str, list[str]]:
    """Copy the database at ``db_path`` into a new backup file in ``backup_dir``,
    then delete all but the newest ``keep``; return (the new path, those deleted).

    Thread-safe, and safe beside a running gateway: it never uses the gateway's
    writer, which goes on committing. The copy holds one read transaction on its
    own read-only connection, so it has every row committed before it started
    and nothing half-done. Returns once the file is complete and durable
    (fsynced, renamed into place, and the folder fsynced).

    Raises:
        ValueError: ``keep`` is not an int >= 1 (checked before anything is written).
        FileNotFoundError, IsADirectoryError, PermissionError: no readable
            database file at ``db_path`` (the message names the path).
        RuntimeError: ``db_path`` is not a SQLite database, or is damaged.
        OSError: the folder cannot be created or written.
    """
    check_keep(keep)
    directory = Path(backup_dir)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"backup folder {directory} is a file, not a folder")
    # Opened first, so that a wrong path fails before anything is created.
    source = _open_source(Path(os.fspath(db_path)), "database file")
    utc = datetime.timezone.utc  # datetime.UTC needs Python 3.11
    stamp = datetime.datetime.now(utc).strftime("%Y%m%dT%H%M%S%f")
    target = directory / f"{PREFIX}{stamp}{SUFFIX}"
    tmp = directory / f".{target.name}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _copy(source, tmp, Path(os.fspath(db_path)))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        source.close()
    os.replace(tmp, target)
    _fsync_dir(directory)
    return str(target), [str(p) for p in prune(directory, keep)]


def _open_source(path: Path, what: str) -> apsw.Connection:
    """Open the database file ``path`` read-only and read its schema.

    Raises an error that names ``path`` and says what is wrong with it, where
    SQLite alone would say "unable to open database file" or "disk I/O error".
    """
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a {what}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"cannot read {path}: permission denied")
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.execute("PRAGMA schema_version").fetchall()  # reads the header and page 1
    except BaseException as exc:
        conn.close()
        if isinstance(exc, (apsw.NotADBError, apsw.CorruptError)):
            raise _unreadable(path, exc) from exc
        raise  # e.g. BusyError: SQLite's own words and class say it best
    return conn


def _unreadable(path: Path, exc: apsw.NotADBError | apsw.CorruptError) -> RuntimeError:
    """The error for a file SQLite cannot read as a database: the path, then what is wrong.

    (The backup API reports a source's fault on the destination, as "not an error".)
    """
    if isinstance(exc, apsw.NotADBError):
        return RuntimeError(f"{path} is not a SQLite database (or its header is damaged)")
    return RuntimeError(f"{path} is damaged: database disk image is malformed")


def _copy(source: apsw.Connection, to_path: Path, source_path: Path) -> None:
    """Copy ``source`` into a new file at ``to_path`` in one backup step, and fsync it.

    One step (-1: every page) is one read transaction on ``source``: a
    consistent snapshot. Steps of N pages would restart whenever another
    connection commits in between, which under load may never finish.
    """
    dest = apsw.Connection(str(to_path))
    try:
        try:
            with dest.backup("main", source, "main") as copy:
                copy.step(-1)
            dest.execute("PRAGMA journal_mode=DELETE").fetchall()  # one self-contained file
        except (apsw.NotADBError, apsw.CorruptError) as exc:  # the copy is as damaged
            raise _unreadable(source_path, exc) from exc
    finally:
        dest.close()
    fd = os.open(to_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backups(backup_dir: StrPath) -> list[Path]:
    """The backups in ``backup_dir``, oldest first (timestamps sort by name).

    Only the names :func:`backup` writes count (``backup-YYYYmmddTHHMMSSffffff.db``):
    other files in the folder are not backups, whatever they are called.
    """
    return sorted(path for path in Path(backup_dir).glob(f"{PREFIX}*{SUFFIX}")
                  if _NAME.fullmatch(path.name))


def prune(backup_dir: StrPath, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``backup_dir``; return those deleted.

    ``keep=0`` deletes them all. Only :func:`backups` are candidates; files that
    vanish meanwhile are skipped.
    """
    found = backups(backup_dir)
    old = found[:-keep] if keep > 0 else found
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return old


def restore(backup_path: StrPath, to_path: StrPath) -> str:
    """Copy a backup (or the newest backup in a folder) to a new database file at
    ``to_path``, check its integrity, and return its path.

    Returns once the new file is complete and durable; it appears under its
    name only after the integrity check passed. Stop the app before you put the
    restored file in the database's place (and remove the old ``-wal`` and
    ``-shm`` files with it): restore refuses a path that still has them, because
    SQLite would replay a stale ``-wal`` (or ``-journal``) into the new file,
    which would then open as "database disk image is malformed".

    Raises:
        FileExistsError: ``to_path`` exists (restore never overwrites), or a
            ``-wal``, ``-shm`` or ``-journal`` file is left beside it.
        FileNotFoundError: no such backup, no backup in the folder, or no
            folder for ``to_path``.
        IsADirectoryError, PermissionError: the backup is a folder, or unreadable.
        RuntimeError: the backup is not a SQLite database, is damaged, or the
            copy's ``PRAGMA integrity_check`` is not ``ok``.
    """
    to = Path(to_path)
    if to.exists():
        raise FileExistsError(f"will not overwrite {to}")
    _refuse_stale_sidecars(to)
    source_path = Path(backup_path)
    if source_path.is_dir():
        found = backups(source_path)
        if not found:
            raise FileNotFoundError(f"no backup in {source_path} (backups are named {_NAME_HINT})")
        source_path = found[-1]
    if not to.parent.is_dir():
        raise FileNotFoundError(f"cannot restore to {to}: no folder {to.parent}")
    tmp = to.with_name(f".{to.name}.tmp")
    source = _open_source(source_path, "backup")
    try:
        _copy(source, tmp, source_path)
    except BaseException:  # e.g. not a database: leave no half-written file behind
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        source.close()
    try:
        _check_integrity(tmp, source_path)
        _refuse_stale_sidecars(to)  # again: one may have appeared during the copy
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, to)
    _fsync_dir(to.parent)
    return str(to)


def _check_integrity(copy: Path, source_path: Path) -> None:
    """Raise ``RuntimeError`` naming ``source_path`` unless ``copy`` passes integrity_check."""
    check = apsw.Connection(str(copy))
    try:
        verdict = [row[0] for row in check.execute("PRAGMA integrity_check")]
    except (apsw.NotADBError, apsw.CorruptError) as exc:  # too damaged to even list the faults
        raise _unreadable(source_path, exc) from exc
    finally:
        check.close()
    if verdict != ["ok"]:
        shown = "; ".join(str(v) for v in verdict[:3]) + ("; ..." if len(verdict) > 3 else "")
        raise RuntimeError(f"{source_path} is damaged: its copy fails integrity_check: {shown}")


def _refuse_stale_sidecars(to: Path) -> None:
    """Raise ``FileExistsError`` if a ``-wal``, ``-shm`` or ``-journal`` file sits at ``to``.

    They belong to an earlier database at that path (or to an app that still has
    it open): SQLite would take them for the new file's and replay them into it.
    Refusing is the only safe answer: whether a process still uses them cannot
    be told from here without touching their locks.
    """
    left = [f"{to}{suffix}" for suffix in _SIDECARS if os.path.lexists(f"{to}{suffix}")]
    if left:
        raise FileExistsError(
            f"will not restore to {to}: {' and '.join(left)} "
            f"{'is' if len(left) == 1 else 'are'} left from an earlier database there, and "
            "SQLite would replay them into the restored file (it would open as 'database disk "
            "image is malformed'). Stop whatever uses that database, then move them away, or "
            "restore to another path")


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
