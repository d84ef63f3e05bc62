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
contract says, with a note (``exc.__notes__``) saying which.

An answer that arrives after its event loop was closed is dropped quietly
(the request committed all the same); the worker is not disturbed.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RequestTimeout
from ..bulk import run_slice
from ..gateway import DEFAULT, Gateway, State, Timeout
from ..request import Kind, Params, check_many, check_params, check_priority, check_sql
from ..result import Result

if TYPE_CHECKING:
    from .asyncblock import AsyncWriteBlock

__all__ = ["AsyncGateway"]

T = TypeVar("T")

_READ_THREADS = 4  # default size of the pool that runs reads off the event loop
_WRITES_MEMO = 4096  # SQL texts remembered as writes (cleared when full)


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
        self._pool: ThreadPoolExecutor | None = None
        self._writes: set[str] = set()  # SQL texts a reader declined (set ops are atomic)
        self._pool_lock = threading.Lock()  # held while creating or shutting down _pool

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
        """Drain and close the gateway (in a thread), and stop the read threads.

        Tasks still waiting get their answers as the queue drains (everything
        accepted is committed first); later calls raise GatewayClosed. Closes
        a shared gateway too: call it only when no other code needs it.
        """
        await asyncio.get_running_loop().run_in_executor(None, self._close, timeout)

    def _close(self, timeout: float | None, gateway_too: bool = True) -> None:
        if gateway_too:
            self.gateway.close(timeout)
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def __aenter__(self) -> AsyncGateway:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the gateway if this object made or started it; else only the read threads."""
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

    # -- calls ------------------------------------------------------------------

    async def execute(self, sql: str, params: Params = (), *, timeout: Timeout = DEFAULT,
                      priority: str = "interactive") -> Result:
        """Run ``sql`` atomically; return once committed (as :meth:`Gateway.execute`).

        With readers, a statement SQLite judges read-only runs on a read
        thread; anything else goes to the writer without a thread.

        Raises:
            as :meth:`Gateway.execute`; ``asyncio.CancelledError`` with a note
            when the awaiting task is cancelled.
        """
        seconds = self._seconds(timeout)
        readers = self._readers_for(sql)
        if readers is not None:
            check_sql(sql)
            check_priority(priority)
            params = _copied(params)  # other tasks run before the read thread takes it
            started = time.monotonic()
            future: Future[Any] = self._read_pool().submit(readers.read, sql, params, seconds)
            result = await _wait(future, seconds, None, read=True)
            if result is not None:
                return result  # type: ignore[no-any-return]
            # SQLite judged it a write: to the writer, now and next time.
            if len(self._writes) >= _WRITES_MEMO:
                self._writes.clear()
            self._writes.add(sql)
            if seconds is not None:
                seconds = max(0.0, seconds - (time.monotonic() - started))
        future, stop = self.gateway._submit_request(Kind.EXECUTE, sql, params,
                                                    priority=priority)
        return await _wait(future, seconds, stop)  # type: ignore[no-any-return]

    async def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                          timeout: Timeout = DEFAULT, priority: str = "interactive") -> Result:
        """One statement per parameter set, all atomically (as :meth:`Gateway.executemany`)."""
        seconds = self._seconds(timeout)
        future, stop = self.gateway._submit_request(Kind.EXECUTEMANY, sql, seq_of_params,
                                                    priority=priority)
        return await _wait(future, seconds, stop)  # type: ignore[no-any-return]

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
        seconds = self._seconds(timeout)
        future, _ = self.gateway._submit_request(Kind.TRANSACTION, fn=_plain(fn), args=args,
                                                 kwargs=kwargs, priority=priority)
        return await _wait(future, seconds, None)  # type: ignore[no-any-return]

    async def run_exclusive(self, fn: Callable[..., T], /, *args: Any,
                            timeout: Timeout = DEFAULT, priority: str = "interactive",
                            **kwargs: Any) -> T:
        """Run ``fn(apsw_connection, ...)`` alone, outside any transaction
        (as :meth:`Gateway.run_exclusive`); fn is a plain function."""
        seconds = self._seconds(timeout)
        future, _ = self.gateway._submit_request(Kind.EXCLUSIVE, fn=_plain(fn), args=args,
                                                 kwargs=kwargs, priority=priority)
        return await _wait(future, seconds, None)  # type: ignore[no-any-return]

    def submit(self, sql: str, params: Params = (), *,
               priority: str = "interactive") -> asyncio.Future[Result]:
        """Write-behind: enqueue ``sql``; return an asyncio future at once.

        Not a coroutine: the request is accepted (or refused with Overloaded,
        GatewayClosed, TypeError, ValueError) before it returns, so order
        holds without an ``await``. The future resolves after the commit;
        cancelling it before the request starts stops it from running.
        """
        return _bridge(self.gateway.submit(sql, params, priority=priority))

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", **kwargs: Any) -> asyncio.Future[T]:
        """Write-behind form of :meth:`transaction`; returns an asyncio future at once."""
        return _bridge(self.gateway.submit_transaction(_plain(fn), *args, priority=priority,
                                                       **kwargs))

    async def flush(self, timeout: Timeout = DEFAULT) -> None:
        """Barrier: return once every request accepted before it is committed or failed."""
        seconds = self._seconds(timeout)
        future, _ = self.gateway._submit_request(Kind.FLUSH)
        await _wait(future, seconds, None)

    async def bulk(self, sql: str, seq_of_params: Iterable[Params], *,
                   timeout: Timeout = DEFAULT, priority: str = "background") -> int:
        """Run one statement per parameter set in slices; return the rows changed.

        As :meth:`Gateway.bulk`: each slice holds the writer for about
        ``background_slice`` seconds and is committed on its own. ``timeout``
        applies to each slice. Cancelled or failed, the error carries a note
        saying how many parameter sets were committed; the rest do not run.
        """
        rows = check_many(seq_of_params)
        sql = check_sql(sql)
        seconds = self._seconds(timeout)
        done = changed = 0
        while done < len(rows):
            try:
                future, _ = self.gateway._submit_request(
                    Kind.TRANSACTION, fn=run_slice, priority=priority,
                    args=(sql, rows, done, self.gateway.background_slice, None))
                ran, count = await _wait(future, seconds, None)
            except BaseException as exc:
                _add_note(exc, f"bulk(): {done} of {len(rows)} parameter sets were committed "
                               "before this error; the rest did not run")
                raise
            done += ran
            changed += count
        return changed

    # -- plumbing ---------------------------------------------------------------

    def _seconds(self, timeout: Timeout) -> float | None:
        """The wait in seconds (None: no limit); a bad value raises before anything is queued."""
        if timeout is DEFAULT:
            return self.gateway.timeout
        if timeout is None:
            return None
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and (
                0 <= timeout < math.inf):
            return float(timeout)
        raise ValueError("timeout must be a finite number of seconds >= 0, or None for no "
                         f"limit; not {timeout!r}")

    def _readers_for(self, sql: object) -> Any:
        """The gateway's readers if ``sql`` should be tried on one, else None.

        A read thread only asks a reader (which declines what SQLite judges a
        write); a write is then sent to the writer from the loop, so its
        cancellation keeps its meaning. Looks at two private attributes of
        Gateway (its readers, and the SQL texts it learned are writes).
        """
        readers = getattr(self.gateway, "_readers", None)
        if readers is None or sql in self._writes or self.gateway.state is not State.RUNNING or (
                sql in getattr(self.gateway, "_writes", ())):
            return None
        return readers

    def _read_pool(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self.read_threads, thread_name_prefix="sqlite-gateway-async-read")
                pool = self._pool
        return pool


def _copied(params: Params) -> Params:
    checked = check_params(params)
    return dict(checked) if isinstance(checked, Mapping) else tuple(checked)


def _plain(fn: Callable[..., T]) -> Callable[..., T]:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} is a coroutine function; a transaction fn "
            "runs on the writer thread while it holds the write lock, so it cannot await: "
            "pass a plain function (do the awaiting before or after the call)")
    return fn


class _Inbox:
    """Answers for one event loop from other threads, delivered in one wake-up per burst.

    The worker answers a whole batch at once. One ``call_soon_threadsafe`` per
    answer would write to the loop's wake-up pipe once each, and every such
    write lets the GIL go: the worker could then wait a switch interval
    (5 ms) for the busy loop thread to give it back, per answer. So answers
    queue here, and only the first of a burst wakes the loop.
    """

    __slots__ = ("__weakref__", "_lock", "_loop", "_items", "_scheduled", "_closed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: the inbox must not keep its loop alive
        # _lock guards _items, _scheduled and _closed.
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._scheduled = False  # a drain is scheduled on the loop and has not run yet
        self._closed = False  # the loop was found closed: answers are dropped

    def post(self, waiter: asyncio.Future[Any], done: Future[Any]) -> None:
        """From any thread: have ``waiter`` settled from ``done`` on the loop; never raises."""
        with self._lock:
            if self._closed:
                return
            self._items.append((waiter, done))
            if self._scheduled:
                return
            self._scheduled = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("the event loop is gone")
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody can await these answers any more
            with self._lock:
                self._closed = True
                self._items.clear()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for waiter, done in items:
            _settle(waiter, done)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = (
    weakref.WeakKeyDictionary())
_inboxes_lock = threading.Lock()  # held while adding an inbox


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    inbox = _inboxes.get(loop)
    if inbox is None:
        with _inboxes_lock:
            inbox = _inboxes.setdefault(loop, _Inbox(loop))
    return inbox


def _bridge(future: Future[T]) -> asyncio.Future[T]:
    """An asyncio future on the running loop that follows ``future``.

    The answer reaches the loop through its :class:`_Inbox` (no thread is
    parked waiting). Cancelling the asyncio future cancels ``future``, which
    stops the request only if it has not started.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    post = _inbox(loop).post

    def cancel_source(settled: asyncio.Future[T]) -> None:
        if settled.cancelled():
            future.cancel()

    waiter.add_done_callback(cancel_source)
    future.add_done_callback(lambda done: post(waiter, done))
    return waiter


def _settle(waiter: asyncio.Future[T], done: Future[T]) -> None:
    """On the loop: copy the outcome of ``done`` into ``waiter`` (unless it is settled)."""
    if waiter.done():
        return
    if done.cancelled():
        waiter.cancel()
        return
    exc = done.exception()
    if exc is None:
        waiter.set_result(done.result())
        return
    try:
        waiter.set_exception(exc)  # the worker's exception object itself
    except TypeError:  # asyncio refuses StopIteration in a future
        waiter.set_exception(RuntimeError(f"the request raised {exc!r}"))


class _TimedOut(Exception):
    """Set on a waiter whose wait ran out (never leaves this module)."""


def _time_out(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_TimedOut())


async def _wait(future: Future[Any], timeout: float | None,
                stop: Callable[[], bool] | None, read: bool = False) -> Any:
    """Await ``future``; timeouts and cancellation as the module docstring says.

    The timeout is a timer on the loop that fails the waiter (cheaper than
    ``asyncio.wait_for``, which wraps the waiter in another future).
    """
    waiter = _bridge(future)
    timer = None if timeout is None else waiter.get_loop().call_later(
        timeout, _time_out, waiter)
    try:
        return await waiter
    except _TimedOut:
        started = not future.cancel()
        if started and future.done():
            return future.result(0)  # answered just as the wait ended
        interrupted = started and stop is not None and stop()
        # A read that ran wrote nothing: nothing of it can still commit.
        raise RequestTimeout(timeout or 0.0, started and not read, interrupted) from None
    except asyncio.CancelledError as exc:
        if read:
            future.cancel()
            _add_note(exc, "sqlite_gateway: cancelled during a read; nothing was written")
        else:
            _add_note(exc, _cancel_note(future, stop))
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _cancel_note(future: Future[Any], stop: Callable[[], bool] | None) -> str:
    """Cancel ``future`` if it has not started; say what became of the request."""
    if future.cancel():
        return "sqlite_gateway: cancelled before the request started; it will not run"
    if future.done():
        outcome = "it failed" if future.exception() is not None else "it was committed"
        return f"sqlite_gateway: cancelled after the request had finished; {outcome}"
    if stop is not None and stop():
        return ("sqlite_gateway: cancelled while the request ran; its running statement was "
                "interrupted, so it will most likely not commit")
    return "sqlite_gateway: cancelled after the request started; it may still commit"


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``; on Python 3.10 (no add_note) the same list by hand."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            setattr(exc, "__notes__", notes)  # noqa: B010 (no such attribute on 3.10)
        notes.append(note)
