"""The calls that return at once: write-behind.

``submit``/``submit_transaction`` hand back a Future, ``post`` hands back
nothing (its failures are kept for :meth:`WriteBehind.failures`). Each checks
its input, then enqueues through the :class:`~sqlite_gateway.core.Core`: the
caller goes on before the worker runs the request, so parameters are copied
at the call. Every door offers these same calls (the asyncio one calls them).
Order: one priority's submissions run in the order they were accepted;
``Gateway.flush()`` is the barrier that covers them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .core import Core
from .failures import PostFailure
from .lifecycle import Lifecycle, State
from .request import Kind, Params, Request, capture_params, check_sql, lane_of
from .result import Result
from .watchdog import Watchdog

T = TypeVar("T")
_get_ident = threading.get_ident
_RUNNING = State.RUNNING


class WriteBehind(Lifecycle):
    """The write-behind calls of :class:`~sqlite_gateway.Gateway` (its base).

    Thread-safe. Every call here raises at once, with nothing enqueued, when
    the request is refused: ``Overloaded`` (the queue is full), ``GatewayClosed``,
    ``TypeError``/``ValueError`` (bad input).
    """

    def __init__(self, path: str, core: Core, watchdog: Watchdog | None) -> None:
        super().__init__(path, core, watchdog)
        self._failures = core.failures  # what post() could not write, until failures()
        self._report = self._failures.report

    def submit(self, sql: str, params: Params = (), *, priority: str = "interactive",
               block: bool = False, timeout: float | None = None) -> Future[Result]:
        """Write-behind: enqueue ``sql`` and return its future at once.

        Submissions of one priority run in the order they were accepted. The
        future's result is set only after the commit; its exception is
        SQLite's own error. Cancelling the future before the request starts
        stops it from running. ``params`` are copied at the call: changing
        the list or dict afterwards changes nothing.

        Its done-callbacks run on the worker thread as it answers: an error in
        one is logged and goes no further, but one that blocks stalls every
        caller behind it. Keep them short.

        Args:
            block: wait for room instead of raising Overloaded when the queue
                is nearly full, like ``queue.Queue.put(block=True)``. Only for
                ``priority="background"`` producers (importers, helper
                threads): they fill the queue up to 90 %, the rest stays for
                web requests.
            timeout: with ``block``, the longest wait for room (None: no
                limit); then Overloaded.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        lane = lane_of(priority, block, timeout)
        request = Request.submitted(Kind.EXECUTE, check_sql(sql), capture_params(params),
                                    None, (), None, lane)
        self.core.enqueue(request, block, timeout)
        return request.future  # type: ignore[return-value]

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", block: bool = False,
                           timeout: float | None = None, **kwargs: Any) -> Future[T]:
        """Write-behind form of :meth:`transaction`; returns its future at once.

        ``fn``'s arguments are passed as they are (not copied): do not change
        them until the future is done. ``block`` and ``timeout`` are as in
        :meth:`submit` (every other keyword goes to fn).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request.submitted(Kind.TRANSACTION, None, None, fn, args, kwargs,
                                    lane_of(priority, block, timeout))
        self.core.enqueue(request, block, timeout)
        return request.future  # type: ignore[return-value]

    def post(self, sql: str, params: Params = (), *, priority: str = "interactive",
             block: bool = False, timeout: float | None = None) -> None:
        """Fire-and-forget write-behind: enqueue ``sql`` and return at once, no future.

        For logs that need no answer per row (a page view, an audit row):
        the cheapest write there is. Order is kept with every other call of
        the same priority, and :meth:`flush` covers posted writes as it covers
        submitted ones. A failed post keeps nothing and is never silent: it is
        counted in ``stats()["post_failures"]``, the first after each flush is
        logged at ERROR, and :meth:`failures` returns it. ``flush()`` does not
        raise for it. ``params`` are copied at the call; ``block`` and
        ``timeout`` as in :meth:`submit`.

        Use :meth:`submit` when the caller needs to know that this row
        committed (a bet, a payment); ``post`` when a lost row would only be
        logged, and the next flush is the point where the job checks.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        lane = lane_of(priority, block, timeout)
        request = Request.posted(check_sql(sql), capture_params(params), lane, self._report)
        if block or self._state is not _RUNNING:
            self.core.enqueue(request, block, timeout)  # (with the checks a waiting call needs)
            return
        # Refused inside a transaction fn like every other call: its row would
        # commit in a later batch even if the fn failed.
        worker, ident = self._worker, _get_ident()
        if (ident == worker.thread_ident or ident == worker.inline_ident
                or ident == worker.holder_ident):
            self.core.check_caller("post")
        self._queue.put(request)

    def failures(self) -> list[PostFailure]:
        """Return the :meth:`post` failures since the last call, and forget them.

        Thread-safe; each failure is returned to exactly one caller. At most
        1000 are kept between two calls; the rest are only counted
        (``stats()["post_failures"]``).
        """
        return self._failures.take()
