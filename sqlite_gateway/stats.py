"""Figures about the gateway, written by the writer's holder, read by anyone.

Whoever holds the writer (the worker thread, or a caller running its request
in place) records per batch, not per request: one call for the transaction
(``record_batch``) and one for its answers (``record_answers``). Read counts
are kept by the readers, not here. Latency percentiles come from a fixed-size
ring of the most recent requests, so memory does not grow with traffic; they
are approximate: they describe the last ``_RING`` requests, not all of them.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Iterable
from typing import Any

_RING = 4096  # recent latencies kept for percentiles


class Stats:
    """Counters and a latency ring. Thread-safe: ``_lock`` guards every field."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._requests = 0  # answered, with a result or an error
        self._errors = 0  # answered with an error
        self._batches = 0  # transactions attempted (each BEGIN ... COMMIT)
        self._commits = 0  # transactions committed
        self._reruns = 0  # batches run again after a whole-transaction rollback
        self._batch_max = 0
        self._batched = 0  # requests run inside batches (for the mean size)
        self._blocks = 0  # write blocks that held the writer (Gateway.writer())
        self._blocks_expired = 0  # ... and were rolled back at their hold limit
        self._block_hold = 0.0  # seconds they held it, summed
        self._block_hold_max = 0.0
        self._ring = array("d", bytes(8 * _RING))
        self._ring_next = 0
        self._ring_len = 0

    def record_batch(self, size: int, committed: bool, reruns: int = 0) -> None:
        with self._lock:
            self._batches += 1
            self._commits += committed
            self._reruns += reruns
            self._batched += size
            if size > self._batch_max:
                self._batch_max = size

    def record_block(self, held: float, expired: bool) -> None:
        """A write block let go of the writer after ``held`` seconds."""
        with self._lock:
            self._blocks += 1
            self._blocks_expired += expired
            self._block_hold += held
            if held > self._block_hold_max:
                self._block_hold_max = held

    def record_answers(self, latencies: Iterable[float], errors: int) -> None:
        with self._lock:
            ring, i, n = self._ring, self._ring_next, self._ring_len
            count = 0
            for latency in latencies:
                ring[i] = latency
                i = (i + 1) % _RING
                count += 1
            self._ring_next = i
            self._ring_len = min(n + count, _RING)
            self._requests += count
            self._errors += errors

    def snapshot(self, queued: int) -> dict[str, Any]:
        with self._lock:
            recent = sorted(self._ring[: self._ring_len])
            figures: dict[str, Any] = {
                "queued": queued,
                "requests": self._requests,
                "errors": self._errors,
                "batches": self._batches,
                "commits": self._commits,
                "reruns": self._reruns,
                "batch_mean": self._batched / self._batches if self._batches else 0.0,
                "batch_max": self._batch_max,
                "uptime_s": time.monotonic() - self._started,
                "write_blocks": self._blocks,
                "write_blocks_expired": self._blocks_expired,
                "write_block_hold_s": self._block_hold,
                "write_block_hold_max_ms": self._block_hold_max * 1000,
            }
        figures["latency_p50_ms"] = _percentile(recent, 0.50) * 1000
        figures["latency_p99_ms"] = _percentile(recent, 0.99) * 1000
        figures["latency_max_ms"] = (recent[-1] if recent else 0.0) * 1000
        figures["latency_window"] = len(recent)
        return figures


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
