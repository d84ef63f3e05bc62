"""The calls that return at once: write-behind and its plumbing.

``submit``/``submit_transaction`` hand back a Future, ``post`` hands back
nothing (its failures are kept for :meth:`WriteBehind.failures`), and
``_submit_request`` is the same door for integrations that wait their own way
(the asyncio one). Each checks its input, then enqueues: the caller goes on
before the worker runs the request, so parameters are copied at the call.
Order: one priority's submissions run in the order they were accepted;
``Gateway.flush()`` is the barrier that covers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import GatewayError
from .failures import FailureLog, PostFailure
from .lifecycle import Lifecycle, State
from .readers import ReaderLanes, ReaderPool
from .request import (FUTURE, Kind, Params, Request, capture_params, check_many,
                      check_priority, check_sql, check_timeout, new_future, new_post)
from .requestqueue import RequestQueue
from .result import Result
from .watchdog import Watchdog
from .worker import Worker

T = TypeVar("T")
_RUNNING = State.RUNNING

SQL_KINDS = (Kind.EXECUTE, Kind.EXECUTEMANY)  # requests that are SQL only


class WriteBehind(Lifecycle):
    """The write-behind calls of :class:`~sqlite_gateway.Gateway` (its base).

    Thread-safe. Every call here raises at once, with nothing enqueued, when
    the request is refused: ``Overloaded`` (the queue is full), ``GatewayClosed``,
    ``TypeError``/``ValueError`` (bad input).
    """

    def __init__(self, path: str, queue: RequestQueue, worker: Worker,
                 readers: ReaderPool | ReaderLanes | None, watchdog: Watchdog | None) -> None:
        super().__init__(path, queue, worker, readers, watchdog)
        self._failures = FailureLog()  # what post() could not write, until failures()
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
        lane = 0 if priority == "interactive" and block is False else self._lane_for(
            priority, block, timeout)
        request = new_future(Kind.EXECUTE, check_sql(sql), capture_params(params), lane)
        self._enqueue(request, block, timeout)
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
        request = Request(Kind.TRANSACTION, fn=fn, args=args, kwargs=kwargs,
                          priority=self._lane_for(priority, block, timeout), answer=FUTURE)
        self._enqueue(request, block, timeout)
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
        lane = 0 if priority == "interactive" and block is False else self._lane_for(
            priority, block, timeout)
        request = new_post(check_sql(sql), capture_params(params), lane, self._report)
        if block or self._state is not _RUNNING or self._worker.holder_ident is not None:
            self._enqueue(request, block, timeout)  # (with the checks a waiting call needs)
        else:
            # No nested-call check: a post made inside a transaction fn is
            # simply run in a later batch; nobody waits for it.
            self._queue.put(request)

    def failures(self) -> list[PostFailure]:
        """Return the :meth:`post` failures since the last call, and forget them.

        Thread-safe; each failure is returned to exactly one caller. At most
        1000 are kept between two calls; the rest are only counted
        (``stats()["post_failures"]``).
        """
        return self._failures.take()

    def _submit_request(self, kind: Kind, sql: str | None = None, params: Any = None, *,
                        fn: Callable[..., Any] | None = None, args: tuple[Any, ...] = (),
                        kwargs: dict[str, Any] | None = None,
                        priority: str = "interactive") -> tuple[Future[Any], Callable[[], bool]]:
        """Enqueue one writer request of ``kind``; return at once (for callers that
        wait their own way, e.g. on an event loop).

        Input is checked as the public method of that kind checks it (``params``
        is the parameter sets for EXECUTEMANY; EXECUTE params are copied, as for
        write-behind). Reads are not routed to readers.

        Returns:
            The request's future (cancel it before the request starts and it
            never runs), and ``stop()``: stops the request's running SQL for
            EXECUTE/EXECUTEMANY (True if it was running), else returns False.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        lane = check_priority(priority)
        if kind is Kind.EXECUTE:
            # The caller goes on before the worker runs it: copy, as write-behind calls must.
            sql, params = check_sql(sql), capture_params(params)
        elif kind is Kind.EXECUTEMANY:
            params = check_many(params)
            sql = check_sql(sql)
        elif kind is not Kind.FLUSH and not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request(kind, sql, params, fn=fn, args=args, kwargs=kwargs, priority=lane,
                          answer=FUTURE)
        self._enqueue(request)
        worker, future = self._worker, request.future
        assert future is not None
        if kind in SQL_KINDS:
            return future, lambda: worker.interrupt(request)
        return future, lambda: False

    def _lane_for(self, priority: str, block: bool, timeout: float | None) -> int:
        lane = check_priority(priority)
        if block:
            if block is not True:
                raise ValueError(f"block must be True or False, not {block!r}")
            if not lane:
                raise ValueError("block=True is for background producers: pass "
                                 "priority='background' (interactive callers fail fast "
                                 "with Overloaded, so a web request never waits for room)")
            check_timeout(timeout)
        elif block is not False:
            raise ValueError(f"block must be True or False, not {block!r}")
        return lane

    def _enqueue(self, request: Request, block: bool = False,
                 timeout: float | None = None) -> None:
        if self._state is State.NEW:
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        self._check_not_worker(request.kind.value)
        self._queue.put(request, block, timeout)
