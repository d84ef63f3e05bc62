"""Roll old ``page_views`` rows up into ``hourly_views`` and prune them, in bounded chunks.

Each chunk is one ``db.transaction``: it takes the lowest ids older than the
cut-off (at most ``chunk`` rows), adds their counts per (page, hour) into
``hourly_views`` and deletes them. Chunks run at background priority: the
writer is held for one chunk at a time, and web requests queued meanwhile run
before the next chunk.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from cherrypy.process.wspbus import Bus

from .periodic import PeriodicJob

_UPSERT = ("INSERT INTO hourly_views(page, hour, views) VALUES (?, ?, ?) "
           "ON CONFLICT(page, hour) DO UPDATE SET views = views + excluded.views")


def run(db: Any, *, keep_seconds: float = 3600.0, chunk: int = 500,
        now: float | None = None) -> dict[str, int]:
    """Roll up and delete the ``page_views`` rows with ``at < now - keep_seconds``.

    Returns:
        ``{"rows": rows rolled up, "chunks": transactions that moved rows}``.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, not {chunk!r}")
    cutoff = (time.time() if now is None else now) - float(keep_seconds)
    seen = db.execute("SELECT count(*) FROM page_views WHERE at < ?", (cutoff,)).scalar()
    rows = chunks = 0
    # Bounded: rows older than the cut-off can only be added by writers that
    # back-date them; those wait for the next run.
    for _ in range(seen // chunk + 1):
        moved = db.transaction(_roll_chunk, cutoff, chunk, priority="background")
        if not moved:
            break
        rows += moved
        chunks += 1
    return {"rows": rows, "chunks": chunks}


def _roll_chunk(conn: Any, cutoff: float, chunk: int) -> int:
    batch = conn.execute("SELECT id, page, at FROM page_views WHERE at < ? ORDER BY id LIMIT ?",
                         (cutoff, chunk)).rows
    if not batch:
        return 0
    counts = Counter((page, int(at // 3600)) for _id, page, at in batch)
    conn.executemany(_UPSERT, [(page, hour, n) for (page, hour), n in sorted(counts.items())])
    # Exactly the batch: the lowest `chunk` old ids are all the old rows up to its last id.
    deleted = conn.execute("DELETE FROM page_views WHERE at < ? AND id <= ?",
                           (cutoff, batch[-1][0])).rowcount
    assert deleted == len(batch), (deleted, len(batch))
    return len(batch)


class RollupJob(PeriodicJob):
    """:func:`run` every ``interval`` seconds (default 60)."""

    def __init__(self, bus: Bus, interval: float = 60.0, name: str | None = "rollup",
                 **settings: Any) -> None:
        settings.setdefault("keep_seconds", 3600.0)
        settings.setdefault("chunk", 500)
        super().__init__(bus, run, interval, name, **settings)
