"""ReplicationPlugin: Litestream beside the app's gateway, started and stopped with the engine.

It owns one :class:`sqlite_gateway.replication.Replicator` for the database of
the gateway published on the bus (``engine.publish("sqlite-gateway")``), and
logs litestream's lines through ``bus.log`` (CherryPy's error log).

Priorities, against CherryPy's own and the gateway plugin's (lower runs
first): start at 68, after the gateway (67) has opened the file in WAL mode
and before the HTTP server (75); stop at 85, after the gateway (80) has
drained and closed, so the final sync holds every commit.

Configuration (the demo app): ``helpers.replication.on: True`` and any
setting below as ``helpers.replication.<setting>``. With it on, the app sets
the gateway's ``autocheckpoint`` to 0 and the maintenance job's
``checkpoint`` to False unless the config says otherwise: Litestream owns
checkpointing.
"""

from __future__ import annotations

import logging
from typing import Any

from cherrypy.process.plugins import SimplePlugin
from cherrypy.process.wspbus import Bus

from sqlite_gateway.replication import Replicator

from .periodic import CHANNEL


class ReplicationPlugin(SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Runs Litestream for the published gateway's database while the engine runs.

    Args:
        bus: the engine, or any ``wspbus.Bus``.
        replica: a folder or URL (``s3://bucket/prefix``); default
            ``<database>-replica`` beside the database.
        db_path: the database; default the published gateway's ``path``.
        **settings: other :class:`Replicator` options (``sync_interval``,
            ``monitor_interval``, ``endpoint``, ``region``, ``force_path_style``,
            ``backoff``, ``max_failures``...); each is also an attribute.
    """

    def __init__(self, bus: Bus, replica: str | None = None, db_path: str | None = None,
                 **settings: Any) -> None:
        super().__init__(bus)
        self.replica = replica
        self.db_path = db_path
        self.settings = settings
        self.replicator: Replicator | None = None

    def start(self) -> None:
        if self.replicator is not None:
            return
        db_path = self.db_path or self._gateway_path()
        if not db_path:
            raise RuntimeError(f"replication: no database: set db_path, or start the gateway "
                               f"plugin (channel {CHANNEL!r}) first")
        self.replicator = Replicator(db_path, self.replica, log=self._log, **self.settings)
        self.replicator.start()

    start.priority = 68  # type: ignore[attr-defined]

    def stop(self) -> None:
        replicator, self.replicator = self.replicator, None
        if replicator is not None:
            replicator.stop()

    stop.priority = 85  # type: ignore[attr-defined]

    def _gateway_path(self) -> str | None:
        for db in self.bus.publish(CHANNEL):
            if db is not None:
                return str(db.path)
        return None

    def _log(self, message: str, level: int) -> None:
        # litestream's DEBUG lines are noise in the app's log.
        if level >= logging.INFO:
            self.bus.log(message, level)
