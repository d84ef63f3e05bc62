"""asyncio integration: ``await``-able calls over the same Gateway and worker.

:class:`AsyncGateway` wraps a :class:`~sqlite_gateway.Gateway` (its own, or
one that threaded code shares). A write is the same request on the same
queue, group-committed by the same worker with everyone else's: the worker
completes the request's ``concurrent.futures.Future``, and a done-callback
hands the answer to the event loop with ``loop.call_soon_threadsafe``. So a
thousand tasks waiting for their commits cost no thread at all::

    from sqlite_gateway.integrations.asyncio import AsyncGateway

    def view(conn, page, now):     # a plain function: it runs on the writer
        conn.execute("INSERT INTO views(page, ts) VALUES (?, ?)", (page, now))
        conn.execute("UPDATE pages SET views = views + 1 WHERE name = ?", (page,))

    async with AsyncGateway("app.db", readers=4) as db:
        await db.transaction(view, "home", time.time())
        rows = (await db.execute("SELECT views FROM pages")).rows

Reads never block the loop: with ``readers``, ``execute()`` hands a read to a
small pool of threads (``read_threads``, each reading in place on a reader
connection of its own); without readers every call goes to the writer.

One core, two doors. Every call is the threaded door's call, built by the
same :class:`~sqlite_gateway.core.Core` (the gateway's ``core``): the same
input checks, queue, read routing, bulk slices and their notes, flush barrier
and timeout rules; only the waiting is the loop's. The calls that return at
once (``submit``, ``submit_transaction``, ``post``, ``failures``) are the
Gateway's own; ``block=True`` (a background producer waiting for room) waits
on a thread of this object, never on the loop.

Why a transaction fn is not a coroutine: it runs on the writer thread while
the write lock is held and every other request waits behind it. An ``await``
inside it would hold the lock for as long as the awaited thing takes (a
network call, another task), so fn stays a plain function and must not do
I/O other than its SQL; an ``async def`` fn is refused.

Timeouts and cancellation mean the same thing, as in the threaded API: if
the request had not started it never runs; if it had, it may still commit
(a running statement of ``execute``/``executemany`` is interrupted, which
then most likely fails it). A timeout raises
:class:`~sqlite_gateway.RequestTimeout` (its ``started`` says which);
cancelling the awaiting task raises ``asyncio.CancelledError``, as asyncio's
contract says, with a note (``exc.__notes__``) saying which. A cancelled read
is stopped (its reader and thread are free again at once).

An answer that arrives after its event loop was closed is dropped quietly
(the request committed all the same); the worker is not disturbed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..arguments import Params, capture_params, check_sql, lane_of
from ..core import Plan
from ..errors import RequestTimeout
from ..failures import PostFailure
from ..gateway import DEFAULT, Gateway, State, Timeout
from ..request import FUTURE, INTERRUPT_GRACE, Kind, Request
from ..result import Result
from .loopbridge import TimedOut, add_note, bridge, time_out

if TYPE_CHECKING:
    from .asyncblock import AsyncWriteBlock

__all__ = ["AsyncGateway"]

T = TypeVar("T")

_READ_THREADS = 4  # default size of the pool that runs reads off the event loop


class AsyncGateway:
    """Await-able forms of every Gateway call, for code on one event loop.

    Args:
        gateway: a :class:`Gateway` to share (started or not), or a database
            path: a new Gateway is made with ``**options``. Leaving ``async
            with`` closes the gateway only if this object made or started it.
        read_threads: threads that run reads off the loop when the gateway has
            readers (default: ``readers`` when given here, else 4).
        **options: Gateway keyword options (only with a path).

    Every method must be called from a coroutine on a running loop (one loop
    at a time per call; different loops may share the gateway). None blocks
    the loop, except that ``executemany`` and ``bulk`` copy their parameter
    sets before they return to it.
    """

    def __init__(self, gateway: Gateway | str | os.PathLike[str], *,
                 read_threads: int | None = None, **options: Any) -> None:
        if isinstance(gateway, Gateway):
            if options:
                raise TypeError("options are for a new Gateway; this one is made already: "
                                f"{', '.join(sorted(options))}")
            self.gateway = gateway
            self._owns = False
        else:
            self.gateway = Gateway(gateway, **options)
            self._owns = True
        if read_threads is None:
            read_threads = options.get("readers") or _READ_THREADS
        if not isinstance(read_threads, int) or isinstance(read_threads, bool) or (
                read_threads < 1):
            raise ValueError(f"read_threads must be a whole number >= 1, not {read_threads!r}")
        self.read_threads = read_threads
        self._core = self.gateway.core
        # _pools_lock is held while creating or shutting down the two pools:
        # the read threads, and the one producer thread that waits for room
        # for block=True calls (one, so they are accepted in call order).
        self._pools_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._producer: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> AsyncGateway:
        """Start the gateway (in a thread: opening may wait for a lock); return self.

        A gateway that is running already is left as it is.
        """
        if self.gateway.state is State.NEW:
            await asyncio.get_running_loop().run_in_executor(None, self.gateway.start)
            self._owns = True
        return self

    async def aclose(self, timeout: float | None = None) -> None:
        """Drain and close the gateway (in a thread), and stop this object's threads.

        Tasks still waiting get their answers as the queue drains (everything
        accepted is committed first); later calls raise GatewayClosed. Closes
        a shared gateway too: call it only when no other code needs it.
        """
        await asyncio.get_running_loop().run_in_executor(None, self._close, timeout)

    def _close(self, timeout: float | None, gateway_too: bool = True) -> None:
        if gateway_too:
            self.gateway.close(timeout)
        with self._pools_lock:
            pools = (self._pool, self._producer)
            self._pool = self._producer = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)

    async def __aenter__(self) -> AsyncGateway:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the gateway if this object made or started it; else only its threads."""
        await asyncio.get_running_loop().run_in_executor(None, self._close, None, self._owns)

    def __repr__(self) -> str:
        return f"<AsyncGateway over {self.gateway!r}>"

    def stats(self) -> dict[str, Any]:
        """The gateway's figures (see :meth:`Gateway.stats`); does not block."""
        return self.gateway.stats()

    def writer(self, *, timeout: Timeout = DEFAULT,
               priority: str = "interactive") -> AsyncWriteBlock:
        """A write block for ``async with adb.writer() as w:`` (see :meth:`Gateway.writer`
        and :mod:`sqlite_gateway.integrations.asyncblock`: ``await w.execute(...)``)."""
        from .asyncblock import AsyncWriteBlock
        return AsyncWriteBlock(self.gateway.writer(timeout=timeout, priority=priority))

    def failures(self) -> list[PostFailure]:
        """The :meth:`post` failures since the last call (see :meth:`Gateway.failures`)."""
        return self._core.failures.take()

    # -- calls that wait --------------------------------------------------------

    async def execute(self, sql: str, params: Params = (), *, timeout: Timeout = DEFAULT,
                      priority: str = "interactive") -> Result:
        """Run ``sql`` atomically; return once committed (as :meth:`Gateway.execute`).

        With readers, a statement SQLite judges read-only runs on a read
        thread; anything else goes to the writer without a thread. The
        timeout covers the whole call.

        Raises:
            as :meth:`Gateway.execute`; ``asyncio.CancelledError`` with a note
            when the awaiting task is cancelled.
        """
        core = self._core
        wait = core.wait_for(timeout)
        sql = check_sql(sql)
        lane_of(priority)
        readers = core.reader_for(sql)
        if readers is None:
            answer: Result = await self._call(
                core.sql_request(Kind.EXECUTE, sql, params, priority, FUTURE), wait)
            return answer
        params = capture_params(params)  # other tasks run before the read thread takes it
        started = time.monotonic()
        cancel = threading.Event()
        read = self._read_pool().submit(core.read, readers, sql, params, wait, cancel)
        result = await _wait_read(read, wait, cancel)
        if result is not None:
            return result
        # SQLite judged it a write: to the writer, with what is left of the timeout.
        request = core.sql_request(Kind.EXECUTE, sql, params, priority, FUTURE)
        try:
            answer = await self._call(request, None if wait is None else max(
                0.0, wait - (time.monotonic() - started)))
        except RequestTimeout as exc:
            raise RequestTimeout(wait or 0.0, exc.started, exc.interrupted) from None
        return answer

    async def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                          timeout: Timeout = DEFAULT, priority: str = "interactive") -> Result:
        """One statement per parameter set, all atomically (as :meth:`Gateway.executemany`);
        the parameter sets are captured at the call."""
        core = self._core
        wait = core.wait_for(timeout)
        answer: Result = await self._call(core.sql_request(Kind.EXECUTEMANY, sql, seq_of_params,
                                                           priority, FUTURE), wait)
        return answer

    async def transaction(self, fn: Callable[..., T], /, *args: Any,
                          timeout: Timeout = DEFAULT, priority: str = "interactive",
                          **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` atomically on the worker; return its value.

        ``fn`` is a plain function (see the module docstring for why), with
        the contract of :meth:`Gateway.transaction`: it may be called twice,
        so keep its side effects inside the database.

        Raises:
            TypeError: fn is a coroutine function.
        """
        core = self._core
        wait = core.wait_for(timeout)
        return await self._call(core.fn_request(Kind.TRANSACTION, _plain(fn), args, kwargs,  # type: ignore[no-any-return]
                                                priority, FUTURE), wait)

    async def run_exclusive(self, fn: Callable[..., T], /, *args: Any,
                            timeout: Timeout = DEFAULT, priority: str = "interactive",
                            **kwargs: Any) -> T:
        """Run ``fn(apsw_connection, ...)`` alone, outside any transaction
        (as :meth:`Gateway.run_exclusive`); fn is a plain function."""
        core = self._core
        wait = core.wait_for(timeout)
        return await self._call(core.fn_request(Kind.EXCLUSIVE, _plain(fn), args, kwargs,  # type: ignore[no-any-return]
                                                priority, FUTURE), wait)

    async def flush(self, timeout: Timeout = DEFAULT) -> None:
        """Barrier: return once every request accepted before it is committed or
        failed (as :meth:`Gateway.flush`: admitted even when the queue is full;
        the next failed post after it is logged again)."""
        wait = self._core.wait_for(timeout)
        await self._run_plan(self._core.flush_plan(FUTURE), wait)

    async def bulk(self, sql: str, seq_of_params: Iterable[Params], *,
                   timeout: Timeout = DEFAULT, priority: str = "background") -> int:
        """Run one statement per parameter set in slices; return the rows changed.

        As :meth:`Gateway.bulk`, by the same plan: each slice holds the writer
        for about ``background_slice`` seconds (less when interactive work
        waits) and is committed on its own; ``timeout`` applies to each
        slice; an error (a cancellation too) carries the same note saying what
        the file holds.
        """
        wait = self._core.wait_for(timeout)
        return await self._run_plan(self._core.bulk_plan(sql, seq_of_params, priority, FUTURE),
                                    wait)

    # -- calls that return at once ------------------------------------------------

    def submit(self, sql: str, params: Params = (), *, priority: str = "interactive",
               block: bool = False, timeout: float | None = None) -> asyncio.Future[Result]:
        """Write-behind: enqueue ``sql``; return an asyncio future at once.

        Not a coroutine: the request is accepted (or refused with Overloaded,
        GatewayClosed, TypeError, ValueError) before it returns, so order
        holds without an ``await``. The future resolves after the commit;
        cancelling it before the request starts stops it from running.

        ``block=True`` (background producers, as :meth:`Gateway.submit`):
        the request is accepted once there is room, on this object's
        producer thread (blocked calls are accepted in call order), and the
        future resolves after its commit: await it to be held back. Its
        parameters are captured at the call.
        """
        if not block:
            return bridge(self._core.submit(sql, params, priority, False, None))
        put = partial(self._core.submit, check_sql(sql), capture_params(params), priority,
                      True, self._blocking(priority, timeout))
        return asyncio.ensure_future(self._accepted_then_answered(put))

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", block: bool = False,
                           timeout: float | None = None, **kwargs: Any) -> asyncio.Future[T]:
        """Write-behind form of :meth:`transaction`; returns an asyncio future at
        once (``block`` as in :meth:`submit`; fn's arguments are not copied)."""
        if not block:
            return bridge(self._core.submit_transaction(_plain(fn), args, kwargs, priority,
                                                        False, None))
        put = partial(self._core.submit_transaction, _plain(fn), args, kwargs, priority,
                      True, self._blocking(priority, timeout))
        return asyncio.ensure_future(self._accepted_then_answered(put))

    async def post(self, sql: str, params: Params = (), *, priority: str = "interactive",
                   block: bool = False, timeout: float | None = None) -> None:
        """Fire-and-forget write-behind (as :meth:`Gateway.post`); returns once accepted.

        Without ``block`` it never suspends: awaiting it only runs the
        Gateway's own ``post``. With ``block=True`` (background producers) it
        waits for room on this object's producer thread, the loop free;
        cancelled while it waits, the row may still be accepted (a post has
        no future to cancel). Failures go to :meth:`failures`.
        """
        if not block:
            self._core.post(sql, params, priority, False, None)
            return
        await self._accepted(partial(self._core.post, check_sql(sql), capture_params(params),
                                     priority, True, self._blocking(priority, timeout)))

    # -- plumbing ---------------------------------------------------------------

    async def _call(self, request: Request, timeout: float | None) -> Any:
        """Enqueue ``request`` (a FUTURE one) and await its answer."""
        self._core.enqueue(request)
        return await _wait(request, timeout, self._core.interrupt)

    async def _run_plan(self, plan: Plan[T], timeout: float | None) -> T:
        """Drive a core plan (see :func:`sqlite_gateway.core.run_plan`) with awaits."""
        try:
            request = next(plan)
            while True:
                try:
                    value = await self._call(request, timeout)
                except BaseException as exc:
                    request = plan.throw(exc)  # the plan adds what it knows and re-raises
                else:
                    request = plan.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _blocking(self, priority: str, timeout: float | None) -> float | None:
        """Check a block=True call's priority and timeout at the call."""
        lane_of(priority, True, timeout)
        return timeout

    async def _accepted(self, put: Callable[[], T]) -> T:
        """Run a blocking put on the producer thread; the loop stays free."""
        pending = asyncio.get_running_loop().run_in_executor(self._thread_pool(True), put)
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(_cancel_when_accepted)
            raise

    async def _accepted_then_answered(self, put: Callable[[], Future[T]]) -> T:
        future = await self._accepted(put)
        return await bridge(future)

    def _read_pool(self) -> ThreadPoolExecutor:
        return self._pool or self._thread_pool(False)

    def _thread_pool(self, producer: bool) -> ThreadPoolExecutor:
        with self._pools_lock:
            if producer:
                if self._producer is None:
                    self._producer = ThreadPoolExecutor(
                        1, thread_name_prefix="sqlite-gateway-async-producer")
                return self._producer
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.read_threads, thread_name_prefix="sqlite-gateway-async-read")
            return self._pool


def _plain(fn: Callable[..., T]) -> Callable[..., T]:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} is a coroutine function; a transaction fn "
            "runs on the writer thread while it holds the write lock, so it cannot await: "
            "pass a plain function (do the awaiting before or after the call)")
    return fn


def _cancel_when_accepted(pending: asyncio.Future[Any]) -> None:
    """A blocked submit whose caller was cancelled: give its request up once accepted."""
    if not pending.cancelled() and pending.exception() is None:
        accepted = pending.result()
        if isinstance(accepted, Future):
            accepted.cancel()


async def _wait(request: Request, timeout: float | None,
                interrupt: Callable[[Request], bool]) -> Any:
    """Await a FUTURE request's answer: the timeout and cancellation rules are
    the request's own (:meth:`Request.timed_out`, :meth:`Request.cancel_note`),
    as in the threaded door. The timeout is a timer on the loop that fails the
    waiter (cheaper than ``asyncio.wait_for``, which wraps it in another future).
    """
    assert request.future is not None
    waiter = bridge(request.future)
    timer = None if timeout is None else waiter.get_loop().call_later(
        timeout, time_out, waiter)
    try:
        return await waiter
    except TimedOut:
        if request.give_up(timeout, interrupt):
            # Only the answer says whether the interrupt hit: wait for it, briefly.
            late = bridge(request.future)
            await asyncio.wait((late,), timeout=INTERRUPT_GRACE)
            if late.done() and not late.cancelled():
                late.exception()  # retrieved here; verdict() reads the request's answer
            late.cancel()
        return request.verdict(timeout)
    except asyncio.CancelledError as exc:
        add_note(exc, request.cancel_note(interrupt))
        raise
    finally:
        if timer is not None:
            timer.cancel()


async def _wait_read(read: Future[Result | None], timeout: float | None,
                     cancel: threading.Event) -> Result | None:
    """Await a read running on a read thread. Given up (a timeout, a cancelled
    task), it is stopped: not started, it never runs; running, ``cancel``
    stops its statement, which frees the reader and the thread at once."""
    waiter = bridge(read)
    timer = None if timeout is None else waiter.get_loop().call_later(
        timeout, time_out, waiter)
    try:
        return await waiter
    except TimedOut:
        if not read.cancel() and read.done():
            return read.result(0)  # answered just as the wait ended
        cancel.set()
        # A read writes nothing: nothing of it can still commit.
        raise RequestTimeout(timeout or 0.0, started=False) from None
    except asyncio.CancelledError as exc:
        read.cancel()
        cancel.set()
        add_note(exc, "sqlite_gateway: cancelled during a read; it was stopped and "
                      "nothing was written")
        raise
    finally:
        if timer is not None:
            timer.cancel()
