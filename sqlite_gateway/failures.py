"""Where the failures of fire-and-forget writes (``Gateway.post``) go.

Nobody waits on a posted write, so its failure cannot be raised in a caller.
It is never silent either: each one is counted, the first after each
``flush()`` is logged at ERROR, and ``Gateway.failures()`` hands the
failures over (each to exactly one caller) since it was last asked.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("sqlite_gateway")

_KEEP = 1000  # failures kept for failures(); past it only counted


@dataclass(frozen=True)
class PostFailure:
    """One posted write that failed: nothing of it was committed."""

    seq: int  # its place in the order the gateway accepted work
    sql: str
    params: Any
    error: BaseException


class FailureLog:
    """Thread-safe: the worker adds, any thread takes. ``_lock`` guards all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[PostFailure] = []
        self.total = 0  # every failure since start (monotone)
        self.dropped = 0  # failures not kept because _KEEP were waiting
        self._logged = False  # the first of this barrier interval was logged

    def report(self, request: Any, error: BaseException) -> None:
        """Record a failed posted request (called by the thread that answered it)."""
        self.add(request.seq, request.sql, request.params, error)

    def add(self, seq: int, sql: str, params: Any, error: BaseException) -> None:
        with self._lock:
            self.total += 1
            if len(self._kept) < _KEEP:
                self._kept.append(PostFailure(seq, sql, params, error))
            else:
                self.dropped += 1
            first, self._logged = not self._logged, True
        if first:
            logger.error("a posted write failed (#%d %r): %s: %s; see Gateway.failures()",
                         seq, sql, type(error).__name__, error)

    def barrier(self) -> None:
        """A flush() returned: the next failure is logged again."""
        with self._lock:
            self._logged = False

    def take(self) -> list[PostFailure]:
        with self._lock:
            kept, self._kept = self._kept, []
            return kept
