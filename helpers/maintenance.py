"""Database maintenance: ``PRAGMA optimize``, a PASSIVE WAL checkpoint, online backups.

``optimize`` and the checkpoint run through ``db.run_exclusive``: alone on the
writer, between batches, outside any transaction (neither can run inside one).
The checkpoint can be switched off (``checkpoint=False``) for when Litestream
owns checkpointing.

Backups and restores are the library's (:mod:`sqlite_gateway.backup`, which
needs no CherryPy): this job calls :func:`backup` after the maintenance, and
this module re-exports those functions for the app. From a shell, use the
library's command (``python -m helpers.maintenance`` is the same command)::

    sqlite-gateway backup app.db --dir backups --keep 7
    sqlite-gateway restore backups --to restored.db   # the newest
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import apsw
from cherrypy.process.wspbus import Bus

from sqlite_gateway import cli
from sqlite_gateway.backup import (PREFIX, SUFFIX, backup, backups, check_keep, prune,
                                   restore)

from .periodic import PeriodicJob

__all__ = ["PREFIX", "SUFFIX", "MaintenanceJob", "backup", "backups", "main", "prune", "restore",
           "run"]


def run(db: Any, *, backup_dir: str | os.PathLike[str] | None = None, keep: int = 3,
        checkpoint: bool = True, optimize: bool = True) -> dict[str, Any]:
    """Optimize, checkpoint and back up ``db`` (a started Gateway); return what was done.

    Returns:
        ``{"optimized": bool, "checkpoint": (wal_frames, checkpointed) or None,
        "backup": path or None, "removed": [old backup paths deleted] or None}``.
    """
    check_keep(keep)
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


class MaintenanceJob(PeriodicJob):
    """:func:`run` every ``interval`` seconds (default 3600)."""

    def __init__(self, bus: Bus, interval: float = 3600.0, name: str | None = "maintenance",
                 **settings: Any) -> None:
        settings.setdefault("backup_dir", None)
        settings.setdefault("keep", 3)
        settings.setdefault("checkpoint", True)
        settings.setdefault("optimize", True)
        super().__init__(bus, run, interval, name, **settings)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.maintenance {backup,restore} ...``: the ``sqlite-gateway`` command."""
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
