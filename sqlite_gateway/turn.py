"""What the worker is doing right now, shared with the watchdog and timed-out callers.

The worker marks each step of its turn: BEGIN, each request's own code (its
SQL, or its fn), the COMMIT. Other threads read the marks to interrupt the
running request's SQL or to give a stuck worker up. Every read and change
happens under one lock, so an interrupt can never hit the next request, and a
give-up cannot race the start of a step: the worker learns of it at the next
step it begins (``GivenUp``) and commits nothing more.
"""

from __future__ import annotations

import threading
import time

import apsw

from .request import Request

_monotonic = time.monotonic


class GivenUp(Exception):
    """Raised on the worker when it begins a step after it was given up."""


class Turn:
    """The worker's current step. Thread-safe: ``_lock`` guards every field."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # begin() and end_request() run twice per request: bare acquire and
        # release cost a third of ``with self._lock`` (timeit: 0.25 against
        # 0.68 us for the pair, load average 3.3). Safe without try/finally:
        # nothing between them can raise, and they run on the worker or an
        # in-place caller, never the main thread (where a signal could land).
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self.death: str | None = None  # why the worker died or was given up; final
        self._running: Request | None = None  # whose own code (SQL or fn) runs now
        self._since: float | None = None  # when the current step began; None: idle
        self._committing = False  # the batch's COMMIT has been started

    def begin(self, request: Request | None, committing: bool = False) -> None:
        """Start a step: ``request``'s own code, or BEGIN/COMMIT (``request`` None).

        Raises:
            GivenUp: the worker was given up meanwhile; it must stop.
        """
        self._acquire()
        if self.death is not None:
            self._release()
            raise GivenUp
        self._running = request
        self._since = _monotonic()
        self._committing = committing
        self._release()

    def end_request(self) -> None:
        """The request's own code has returned (the worker's statements follow)."""
        self._acquire()
        self._running = None
        self._release()

    def idle(self) -> None:
        with self._lock:
            self._running = None
            self._since = None
            self._committing = False

    def current(self) -> tuple[float | None, Request | None]:
        """(when the current step began, None when idle; the request running, or None)."""
        with self._lock:
            return self._since, self._running

    def interrupt(self, request: Request, conn: apsw.Connection | None) -> bool:
        """Interrupt ``conn``'s running statement if ``request``'s code runs now.

        ``conn`` may be read without the lock: while ``request`` runs, the
        worker cannot swap its connection.
        """
        with self._lock:
            if self._running is not request or conn is None:
                return False
            conn.interrupt()
            return True

    def die(self, reason: str, step: float | None = None) -> bool | None:
        """Record the death; return whether COMMIT had begun.

        None, and nothing recorded, if the worker is dead already or (with
        ``step``, the start time ``current()`` gave) has moved on since.
        """
        with self._lock:
            if self.death is not None or (step is not None and step != self._since):
                return None
            self.death = reason
            return self._committing
