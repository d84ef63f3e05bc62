"""The baselines' shared machinery: a connection per calling thread, one unit per call.

:class:`PerThreadGateway` offers :class:`~sqlite_gateway.Gateway`'s API with no
queue and no worker: each calling thread opens its own apsw connection (WAL,
the same ``synchronous``, foreign keys on) and runs each call in its own thread
as one unit, ``BEGIN`` ... ``COMMIT``. What to do when another thread holds the
write lock is the subclasses' (``benchmarks/baselines.py``: RetryGateway,
BusyGateway).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

import apsw

from sqlite_gateway.arguments import (Params, check_many, check_params, check_sql, check_timeout,
                                      lane_of)
from sqlite_gateway.connection import Connection, TransactionGuard, run_sql
from sqlite_gateway.errors import GatewayClosed, GatewayError, NestedCallError
from sqlite_gateway.failures import PostFailure
from sqlite_gateway.lifecycle import State
from sqlite_gateway.options import DEFAULT, Options, Timeout, check_path
from sqlite_gateway.result import Result
from sqlite_gateway.stats import Stats

T = TypeVar("T")
_G = TypeVar("_G", bound="PerThreadGateway")

# The options (sqlite_gateway.options.Options) the baselines use; the others
# mean nothing without a queue and a worker. All are accepted and checked, so
# that one configuration can build any of the classes.
USED_OPTIONS = frozenset({"timeout", "synchronous", "vfs"})
BULK_CHUNK = 500  # parameter sets per unit in bulk(): the old way's usual batching

Unit = Callable[[apsw.Connection, TransactionGuard], T]


class _Handle:
    """One thread's connection; ``in_use`` while a call of that thread runs."""

    __slots__ = ("__weakref__", "conn", "guard", "in_use", "wait_ms")

    def __init__(self, conn: apsw.Connection, guard: TransactionGuard, wait_ms: int) -> None:
        self.conn, self.guard, self.in_use = conn, guard, False
        self.wait_ms = wait_ms  # the connection's busy timeout now


class Writes(Exception):
    """Raised by a read attempt (``_call``'s ``read``): a statement of the text can write."""


class PerThreadGateway:
    """What both baselines share: a connection per thread, one unit per call.

    Subclasses say how a unit begins (``_BEGIN``), how long a connection waits
    for a lock by itself (``_busy_ms``), and whether a ``BusyError`` is tried
    again (``_backoff``). Options are Gateway's (:class:`~sqlite_gateway.Options`),
    every one checked; the baselines use ``timeout``, ``synchronous`` and
    ``vfs`` (BusyGateway also ``busy_timeout``) and ignore the rest.
    """

    _BEGIN: ClassVar[str] = "BEGIN"

    def __init__(self, path: str | os.PathLike[str], options: Options | None = None,
                 **overrides: Any) -> None:
        self.path = check_path(path)
        opts = self.options = Options.build(options, overrides)
        if opts.timeout is None:
            raise ValueError("timeout must be a finite number of seconds > 0, not None: "
                             "the old way retries or waits until a deadline")
        self.timeout, self.synchronous, self.vfs = opts.timeout, opts.synchronous, opts.vfs
        self._busy_ms = 0  # the busy timeout of each connection, once in WAL mode
        self._local = threading.local()  # .handle: this thread's; .busy: inside a call
        # Our own statements are prepared with the guard off and apsw caches
        # statements by text: a nonce keeps a caller's "BEGIN" from matching.
        nonce = secrets.token_hex(8)
        self._begin, self._commit = f"{self._BEGIN} /* {nonce} */", f"COMMIT /* {nonce} */"
        self._rollback = f"ROLLBACK /* {nonce} */"
        # _lock guards _state, _handles, each handle's in_use, and the figures below.
        self._lock = threading.Lock()
        self._state = State.NEW
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()  # gone with their thread
        self._retries = self._busy = 0
        # Calls, errors, units committed and latency percentiles: the gateway's own
        # bookkeeping (each call is one unit: a batch of one).
        self._stats = Stats()

    @property
    def state(self) -> State:
        """NEW, RUNNING or CLOSED (the old way has no worker to drain or break)."""
        return self._state

    def start(self: _G) -> _G:
        """Open this thread's connection (the file goes to WAL mode); return self."""
        with self._lock:
            if self._state is not State.NEW:
                raise GatewayError(f"gateway is {self._state.value}; it can be started once")
            self._state = State.RUNNING
        self._handle()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Refuse new calls, close idle connections; idempotent. Running calls end
        by their own deadline, then close theirs (``timeout`` is for Gateway's API)."""
        with self._lock:
            self._state = State.CLOSED
            idle = [handle for handle in self._handles if not handle.in_use]
        for handle in idle:  # no thread can start using these any more
            handle.conn.close()

    def __enter__(self: _G) -> _G:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def execute(self, sql: str, params: Params = (), *, timeout: Timeout = DEFAULT,
                priority: str = "interactive") -> Result:
        """Run ``sql`` (one or more statements) as one unit; return once committed.

        Raises:
            apsw.BusyError: still locked at the call's deadline.
            apsw.Error: SQLite's own error, unchanged; nothing of the call is kept.
            TransactionControlError: ``sql`` holds BEGIN/COMMIT/SAVEPOINT/...
            GatewayClosed: the gateway is closed.
        """
        sql, params = check_sql(sql), check_params(params)
        lane_of(priority)
        return self._call(lambda conn, guard: run_sql(conn, guard, sql, params), timeout)

    def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                    timeout: Timeout = DEFAULT, priority: str = "interactive") -> Result:
        """Run one statement once per parameter set, all as one unit."""
        lane_of(priority)
        sql, many = check_sql(sql), check_many(seq_of_params)  # replayable
        return self._call(lambda conn, guard: run_sql(conn, guard, sql, many, many=True),
                          timeout)

    def transaction(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = DEFAULT,
                    priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` as one unit; return its value.

        ``conn`` offers ``execute``/``executemany`` returning :class:`Result`.
        If fn raises, its writes are rolled back and the exception re-raised.
        fn runs again on every retry. A gateway call inside fn raises
        :class:`NestedCallError` (use ``conn``).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        lane_of(priority)

        def unit(conn: apsw.Connection, guard: TransactionGuard) -> T:
            handle = Connection(conn, guard)
            try:
                return fn(handle, *args, **kwargs)
            finally:
                handle.close()
        return self._call(unit, timeout)

    def submit(self, sql: str, params: Params = (), *, priority: str = "interactive",
               block: bool = False, timeout: float | None = None) -> Future[Result]:
        """Run ``sql`` now in this thread (no queue); return a done Future.
        Input and state errors raise at once; SQLite's errors are in the Future.
        (``block`` and ``timeout`` are accepted for the gateway's signature.)"""
        lane_of(priority)
        return self._done(self.execute, check_sql(sql), check_params(params))

    def post(self, sql: str, params: Params = (), *, priority: str = "interactive",
             block: bool = False, timeout: float | None = None) -> None:
        """Run ``sql`` now in this thread, like :meth:`execute`; its error is raised here.
        (``block`` and ``timeout`` are accepted for the gateway's signature.)"""
        lane_of(priority)
        self.execute(check_sql(sql), check_params(params))

    def failures(self) -> list[PostFailure]:
        """Always empty: :meth:`post` raises its errors in the caller."""
        return []

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", block: bool = False,
                           timeout: float | None = None, **kwargs: Any) -> Future[T]:
        """Run :meth:`transaction` now, in this thread; return a done Future.
        (``block`` and ``timeout`` are the gateway's, as in :meth:`submit`;
        every other keyword goes to fn.)"""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        lane_of(priority)
        return self._done(self.transaction, fn, *args, **kwargs)

    def bulk(self, sql: str, seq_of_params: Iterable[Params], *, timeout: Timeout = DEFAULT,
             priority: str = "background") -> int:
        """Run one statement per parameter set in units of BULK_CHUNK, each
        a unit of its own; return the rows changed. Not atomic as a whole."""
        lane_of(priority)
        rows = check_many(seq_of_params)
        return sum(self.executemany(sql, rows[start:start + BULK_CHUNK], timeout=timeout).rowcount
                   for start in range(0, len(rows), BULK_CHUNK))

    def run_exclusive(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = DEFAULT,
                      priority: str = "interactive", **kwargs: Any) -> T:
        """``fn(apsw_connection, ...)`` on this thread's connection, outside any transaction.

        Not exclusive here: the old way has no writer to pause, other threads go
        on. Afterwards the connection is closed (the next call opens a new one),
        so nothing prepared past the transaction guard stays in its cache.
        """
        self._check_running()
        handle = self._handle()
        handle.guard.active = False
        try:
            return fn(handle.conn, *args, **kwargs)
        finally:
            handle.guard.active = True
            if not handle.conn.get_autocommit():
                self._own(handle, self._rollback)
            with self._lock:
                self._handles.discard(handle)
            self._local.handle = None
            handle.conn.close()

    def flush(self, timeout: Timeout = DEFAULT) -> None:
        """Return at once: every call committed before it returned. GatewayClosed if closed."""
        self._check_running()

    def stats(self) -> dict[str, Any]:
        """The gateway's figures (each call counts as one batch, committed or
        not; ``queued`` is 0), plus retries and BusyErrors met. Latencies are
        over the most recent calls. Approximate: a snapshot."""
        figures = self._stats.snapshot(0)
        with self._lock:
            figures.update(state=self._state.value, retries=self._retries,
                           busy_errors=self._busy)
        return figures

    # -- what the subclasses change ----------------------------------------------

    def _backoff(self, attempt: int, deadline: float) -> bool:
        """After a BusyError: wait before the next attempt and return True, or
        return False to raise it."""
        return False

    # -- plumbing ----------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state is State.NEW:
            raise GatewayError("gateway is not started: call start() or use 'with'")
        if self._state is State.CLOSED:
            raise GatewayClosed("gateway is closed")

    def _handle(self) -> _Handle:
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            conn = apsw.Connection(self.path, vfs=self.vfs)
            try:
                conn.set_busy_timeout(int(self.timeout * 1000))  # only while switching to WAL
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
                if str(mode).lower() != "wal":
                    raise GatewayError(f"could not put {self.path!r} in WAL mode ({mode!r})")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.set_busy_timeout(self._busy_ms)
                conn.authorizer = guard = TransactionGuard()
            except BaseException:
                conn.close()
                raise
            handle = self._local.handle = _Handle(conn, guard, self._busy_ms)
            with self._lock:
                self._handles.add(handle)
        return handle

    def _own(self, handle: _Handle, sql: str) -> None:
        """Run one of our own BEGIN/COMMIT/ROLLBACK texts, past the guard."""
        handle.guard.active = False
        try:
            handle.conn.execute(sql)
        finally:
            handle.guard.active = True

    def _call(self, unit: Unit[T], timeout: Timeout,
              read: Unit[T] | None = None) -> T:
        """Run ``unit`` between BEGIN and COMMIT on this thread's connection.
        With ``read``, first try that in autocommit; it raises Writes to say
        the call needs the unit."""
        if getattr(self._local, "busy", False):
            raise NestedCallError(f"{type(self).__name__} called inside a transaction fn: "
                                  "use its conn")
        began = time.monotonic()
        # None means this default too: a retry loop needs a deadline.
        wait = self.timeout if timeout is DEFAULT or timeout is None else (
            check_timeout(timeout) or 0.0)
        deadline = began + wait
        self._check_running()
        handle = self._handle()
        with self._lock:
            handle.in_use = running = self._state is State.RUNNING
        if not running:  # closed while this thread was opening its connection
            handle.conn.close()
            self._check_running()
        self._local.busy, ok, attempt, busy = True, False, 0, 0
        try:
            while True:  # bounded: a BusyError past the deadline is raised
                try:
                    if read is not None:
                        try:
                            value = read(handle.conn, handle.guard)
                            ok = True
                            return value
                        except Writes:
                            read = None
                    self._wait_at_most(handle, deadline)
                    self._own(handle, self._begin)
                    value = unit(handle.conn, handle.guard)
                    self._own(handle, self._commit)
                    ok = True
                    return value
                except apsw.BusyError:
                    busy += 1
                    self._undo(handle)
                    if not self._backoff(attempt, deadline):
                        raise
                    attempt += 1
                except BaseException:
                    self._undo(handle)
                    raise
        finally:
            self._local.busy = False
            with self._lock:
                handle.in_use = False
                closed = self._state is State.CLOSED
                self._retries += attempt
                self._busy += busy
            self._stats.record_batch(1, ok)
            self._stats.record_answers((time.monotonic() - began,), int(not ok))
            if closed:  # close() left this connection to its own thread
                handle.conn.close()

    def _wait_at_most(self, handle: _Handle, deadline: float) -> None:
        """Lower the connection's busy timeout to what is left of the call's time."""
        wait_ms = min(self._busy_ms, max(1, int((deadline - time.monotonic()) * 1000)))
        if wait_ms != handle.wait_ms:
            handle.conn.set_busy_timeout(wait_ms)
            handle.wait_ms = wait_ms

    def _undo(self, handle: _Handle) -> None:
        if not handle.conn.get_autocommit():
            self._own(handle, self._rollback)

    def _done(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        self._check_running()
        future: Future[T] = Future()
        try:
            future.set_result(call(*args, **kwargs))
        except (GatewayClosed, NestedCallError):
            raise  # refused at once, as Gateway.submit refuses
        except Exception as exc:  # SQLite's error, or fn's own, belongs in the future
            future.set_exception(exc)
        return future
