"""The watchdog: nobody waits forever on a worker that is stuck.

A Python transaction fn that never returns cannot be stopped, and neither can
a COMMIT stuck in the operating system. The watchdog is a thread that looks
at the worker's current step (BEGIN, one request's own code, or COMMIT) about
once a second:

- when one step has run ``hang_timeout`` seconds, it interrupts that
  request's running SQL statement (``Connection.interrupt()``; the request
  fails with ``apsw.InterruptError`` and the gateway goes on);
- when the same step is still running ``grace`` seconds later (Python code, or
  a stuck COMMIT), it gives the worker up: the gateway is broken, every
  waiting and later caller gets ``GatewayClosed`` with the reason at once.

The stuck thread itself cannot be stopped and keeps its connection, and with
it the write lock: only a process restart frees them.
"""

from __future__ import annotations

import logging
import threading
import time

from .worker import Worker

logger = logging.getLogger(__name__)

_MAX_INTERVAL = 1.0  # seconds between looks; the watchdog fires at most this late


class Watchdog:
    """Watches one worker; ``check()`` is one look and can be driven by a test.

    Thread-safe: ``start``/``stop`` from any thread; ``check`` from one at a time.
    """

    def __init__(self, worker: Worker, hang_timeout: float, name: str) -> None:
        self.worker = worker
        self.hang_timeout = hang_timeout
        self.grace = min(1.0, hang_timeout)
        self.interval = min(_MAX_INTERVAL, hang_timeout / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._interrupted: float | None = None  # the step (its start time) interrupted
        self._interrupted_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; returns once the thread has ended (at most one interval)."""
        self._stop.set()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        # Daemon, and it ends by itself once the worker will run nothing more
        # (stopped, died or given up), so an abandoned gateway leaves no thread.
        while not self._stop.wait(self.interval) and not self.worker.stopped.is_set():
            if self.check(time.monotonic()):
                return

    def check(self, now: float) -> bool:
        """Look at the worker once; True once it has given the worker up."""
        since, running = self.worker.turn.current()
        if since is None or now - since < self.hang_timeout:
            return False
        if self._interrupted != since:
            self._interrupted, self._interrupted_at = since, now
            if running is not None and self.worker.interrupt(running):
                logger.warning("watchdog: %r ran %.1f s (hang_timeout %g s); interrupted its SQL",
                               running, now - since, self.hang_timeout)
            return False
        if now - self._interrupted_at < self.grace:
            return False
        what = repr(running) if running is not None else "BEGIN/COMMIT"
        reason = (f"the worker has been stuck in {what} for {now - since:.1f} s "
                  f"(hang_timeout={self.hang_timeout:g} s): a transaction fn that never "
                  "returns cannot be stopped; restart the process")
        if not self.worker.give_up(reason, since):
            return False  # it moved on at the last moment (or is already dead)
        logger.critical("watchdog: gateway on %s is broken: %s", self.worker.path, reason)
        return True
