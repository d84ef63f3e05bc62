"""The core that every door of a gateway shares; a door only waits its own way.

A door is a way in: the threaded one (:class:`~sqlite_gateway.Gateway`, whose
calls block their thread, or run in place when the writer is idle) and the
asyncio one (:class:`~sqlite_gateway.integrations.asyncio.AsyncGateway`,
whose calls await). As httpx shares ``BaseClient`` between ``Client`` and
``AsyncClient``, both doors do here, and only here: check a call's input and
build its request, enqueue it (with the not-started and nested-call checks),
route a read to a reader and learn which texts are writes, cut a bulk job
into slices and note what its error leaves in the file, place the flush
barrier and re-arm the failure log after it. The timeout and cancellation
rules live on the request (:meth:`Request.timed_out`,
:meth:`Request.cancel_note`); the write-behind calls (``submit``, ``post``...)
return at once, so they are written here whole, for both doors.

Plans. A call made of several waits (bulk's slices; flush's barrier, then
the log) is a generator: it yields each request to be answered and receives
its value, or has its exception thrown in. :func:`run_plan` drives one in a
thread; the async door drives one with ``await``. What happens between the
waits is thus written once, whatever the door.

The core holds the gateway's parts, never the gateway (an abandoned gateway
can still be collected). Thread-safe: its fields are set before the gateway
starts, except ``started`` and, in a forked child, what :meth:`disown` swaps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from .arguments import (Params, capture_many, capture_params, check_many, check_params, check_sql,
                        check_timeout, lane_of)
from .bulk import add_note, run_slice
from .errors import GatewayClosed, GatewayError, NestedCallError
from .failures import FailureLog
from .memo import TextMemo
from .options import DEFAULT, Timeout
from .readerlanes import ReaderLanes
from .readerpool import ReaderPool
from .request import Answer, Kind, Request
from .requestqueue import RequestQueue
from .result import Result
from .worker import Worker

T = TypeVar("T")
_get_ident = threading.get_ident
Plan = Generator[Request, Any, T]
"""A call as a generator: yields the requests to wait for, returns the call's value."""

# A door's answer mode -> the request constructor of that mode (POST is write-behind's own).
_MAKE = {Answer.WAIT: Request.waiting, Answer.FUTURE: Request.submitted}
SQL_KINDS = (Kind.EXECUTE, Kind.EXECUTEMANY)  # requests that are SQL only: a wait may stop them


class Core:
    """One gateway's shared calls, for every door (see the module docstring).

    Args:
        queue, worker, readers: the gateway's parts.
        timeout: the gateway's default per-call timeout (None: no limit).
        background_slice: seconds one bulk slice may hold the writer.
    """

    def __init__(self, queue: RequestQueue, worker: Worker,
                 readers: ReaderPool | ReaderLanes | None, *, timeout: float | None,
                 background_slice: float) -> None:
        self.queue = queue
        self.worker = worker
        self.readers = readers
        # The inline pool, for the lean read of Gateway.execute (None: none, or disowned).
        self.fast: ReaderPool | None = readers if isinstance(readers, ReaderPool) else None
        self.timeout = timeout
        self.background_slice = background_slice
        self.failures = FailureLog()  # what post() could not write, until failures()
        self.started = False  # set once the gateway has started (a flag: read lock-free)
        # SQL texts a reader declined as writes: sent straight to the writer
        # from then on (writes is the memo's plain dict, for lookups).
        self._writes: TextMemo[bool] = TextMemo()
        self.writes = self._writes.map

    # -- checks -------------------------------------------------------------

    def wait_for(self, timeout: Timeout) -> float | None:
        """A call's wait in seconds (None: no limit), checked before anything is queued."""
        return self.timeout if timeout is DEFAULT else check_timeout(timeout)

    def check_caller(self, what: str) -> None:
        """Refuse a call made from inside a transaction fn, or by a thread that
        holds a write block: it would wait for itself."""
        worker, ident = self.worker, threading.get_ident()
        if ident == worker.holder_ident:
            raise NestedCallError(
                f"Gateway.{what}() was called by a thread that holds a write block "
                "(db.writer()); it would wait for its own block. Use the block's handle "
                "(w.execute, w.executemany, w.savepoint) until the 'with' ends.")
        if ident == worker.thread_ident or ident == worker.inline_ident:
            raise NestedCallError(
                f"Gateway.{what}() was called from inside a transaction fn (on the worker "
                "thread, or in place in its caller's thread); it would wait for itself. "
                "Use the conn argument the fn receives.")

    # -- requests -----------------------------------------------------------------

    def sql_request(self, kind: Kind, sql: str, params: Any, priority: str,
                    answer: Answer) -> Request:
        """A checked EXECUTE (``params``: one set) or EXECUTEMANY (the sets) request.

        A FUTURE request's caller goes on before the worker runs it: its
        parameters are captured as write-behind ones are. A WAIT caller
        blocks meanwhile, so its parameter sets are only materialised.
        """
        lane = lane_of(priority)
        sql = check_sql(sql)
        if answer is Answer.FUTURE:
            params = capture_params(params) if kind is Kind.EXECUTE else capture_many(params)
        else:
            params = check_params(params) if kind is Kind.EXECUTE else check_many(params)
        return _MAKE[answer](kind, sql, params, None, (), None, lane)

    def fn_request(self, kind: Kind, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any] | None, priority: str, answer: Answer) -> Request:
        """A checked TRANSACTION or EXCLUSIVE request (fn's arguments are not copied)."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        return _MAKE[answer](kind, None, None, fn, args, kwargs, lane_of(priority))

    def enqueue(self, request: Request, block: bool = False,
                timeout: float | None = None) -> None:
        """Accept ``request`` or raise at once (nothing enqueued).

        Raises:
            GatewayError: the gateway is not started.
            NestedCallError: called from inside a transaction fn.
            Overloaded, GatewayClosed: from the queue.
        """
        if not self.started:
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        self.check_caller(request.kind.value)
        self.queue.put(request, block, timeout)

    # -- write-behind: the calls that return at once --------------------------------

    def submit(self, sql: str, params: Params, priority: str, block: bool,
               timeout: float | None) -> Future[Result]:
        """Enqueue ``sql`` with its parameters captured; its future (see ``Gateway.submit``)."""
        lane = lane_of(priority, block, timeout)
        request = Request.submitted(Kind.EXECUTE, check_sql(sql), capture_params(params),
                                    None, (), None, lane)
        self.enqueue(request, block, timeout)
        future = request.future
        assert future is not None
        return future

    def submit_transaction(self, fn: Callable[..., T], args: tuple[Any, ...],
                           kwargs: dict[str, Any], priority: str, block: bool,
                           timeout: float | None) -> Future[T]:
        """Enqueue ``fn(conn, *args, **kwargs)``; its future (``Gateway.submit_transaction``)."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request.submitted(Kind.TRANSACTION, None, None, fn, args, kwargs,
                                    lane_of(priority, block, timeout))
        self.enqueue(request, block, timeout)
        future = request.future
        assert future is not None
        return future

    def post(self, sql: str, params: Params, priority: str, block: bool,
             timeout: float | None) -> None:
        """Enqueue ``sql`` with its parameters captured, no answer (see ``Gateway.post``)."""
        lane = lane_of(priority, block, timeout)
        request = Request.posted(check_sql(sql), capture_params(params), lane,
                                 self.failures.report)
        if block or not self.started:
            self.enqueue(request, block, timeout)  # (with the checks a waiting call needs)
            return
        # Refused inside a transaction fn like every other call: its row would
        # commit in a later batch even if the fn failed. (enqueue(), inlined
        # less its not-started check, made above: timeit, load average 3.8, a
        # post 1.50 us so, 1.77 through enqueue().)
        worker, ident = self.worker, _get_ident()
        if (ident == worker.thread_ident or ident == worker.inline_ident
                or ident == worker.holder_ident):
            self.check_caller("post")
        self.queue.put(request)

    def interrupt(self, request: Request) -> bool:
        """Stop ``request``'s running SQL (True if it ran): what a wait that ends
        early may do. A fn's Python cannot be stopped (the watchdog's job)."""
        return request.kind in SQL_KINDS and self.worker.interrupt(request)

    # -- reads ----------------------------------------------------------------

    def reader_for(self, sql: str) -> ReaderPool | ReaderLanes | None:
        """The readers to try ``sql`` on, or None: it goes to the writer.

        Raises:
            GatewayClosed: the gateway is closed (a read must not outlive it).
        """
        readers = self.readers
        if readers is None or not self.started or sql in self.writes:
            return None
        reason = self.queue.closed_reason
        if reason is not None:
            raise GatewayClosed(reason)
        return readers

    def read(self, readers: ReaderPool | ReaderLanes, sql: str, params: Params,
             timeout: float | None, cancel: threading.Event | None = None) -> Result | None:
        """Run ``sql`` on a reader; None when SQLite judged it a write (then
        remembered: it goes straight to the writer next time). ``cancel``,
        once set, stops the read as its deadline would."""
        result = readers.read(sql, params, timeout, cancel)
        if result is None:
            self.learned_write(sql)
        return result

    def learned_write(self, sql: str) -> None:
        """A reader declined ``sql`` as a write: from now on it goes straight to the writer."""
        self._writes.remember(sql, True)

    # -- plans ----------------------------------------------------------------

    def flush_plan(self, answer: Answer) -> Plan[None]:
        """The barrier (accepted even when the queue is full), then the failure
        log re-armed: the next failed post after it is logged again."""
        yield _MAKE[answer](Kind.FLUSH)
        self.failures.barrier()

    def bulk_plan(self, sql: str, seq_of_params: Iterable[Params], priority: str,
                  answer: Answer) -> Plan[int]:
        """``bulk()``: slices of about ``background_slice`` seconds, one after
        another; a background slice yields the writer as soon as interactive
        work waits. The first error gets a note saying what the file holds,
        and no later slice is sent."""
        rows = capture_many(seq_of_params)  # slices run while the caller's code goes on
        sql, lane = check_sql(sql), lane_of(priority)
        preempted = self.queue.interactive_waiting if lane else None
        new = _MAKE[answer]
        done = changed = 0
        while done < len(rows):
            request = new(Kind.TRANSACTION, None, None, run_slice,
                          (sql, rows, done, self.background_slice, preempted), None, lane)
            try:
                ran, count = yield request
            except BaseException as exc:
                add_note(exc, request, done, len(rows))
                raise
            done += ran
            changed += count
        return changed

    # -- fork -----------------------------------------------------------------

    def disown(self, queue: RequestQueue) -> None:
        """In a forked child: the parent's readers are not ours, and ``queue`` (closed) is."""
        self.queue = queue
        self.readers = None
        self.fast = None
        lock = self.worker.process_lock
        if lock is not None:
            lock.forget()  # an inherited descriptor must not keep the parent's lock alive


def run_plan(plan: Plan[T], wait: Callable[[Request], Any]) -> T:
    """Drive ``plan`` in this thread: ``wait(request)`` enqueues a request and
    returns its value or raises its error, which goes back into the plan."""
    try:
        request = next(plan)
        while True:
            try:
                value = wait(request)
            except BaseException as exc:
                request = plan.throw(exc)  # the plan adds what it knows and re-raises
            else:
                request = plan.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
