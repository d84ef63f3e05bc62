"""The baselines: SQLite the ways most threaded apps use it, to compare against.

Not part of the public API (``sqlite_gateway.__all__`` does not export them):
they exist so that the benchmarks (``benchmarks/compare.py``,
``benchmarks/load_sweep.py``) and the demo app (``db.backend: retry`` or
``busy``) can measure the approaches this project replaces.

Both offer :class:`~sqlite_gateway.Gateway`'s API with no queue and no worker.
Each calling thread opens its own apsw connection (WAL, the same
``synchronous``, foreign keys on) and runs each call in its own thread as one
unit, ``BEGIN`` ... ``COMMIT``. They differ in what happens when another
thread holds the write lock:

- :class:`RetryGateway` (busy timeout 0, ``BEGIN`` deferred, as typical apps
  do): when SQLite answers ``apsw.BusyError`` the unit is rolled back and run
  again after ``uniform(0, min(max_delay, base_delay * 2**attempt))`` seconds
  (exponential backoff, full jitter) until the call's deadline, its
  ``timeout``; past it that last ``BusyError`` is raised. So, unlike with the
  gateway, a transaction fn may run many times: keep its side effects inside
  the database.
- :class:`BusyGateway` (what Django 5.1's ``transaction_mode="IMMEDIATE"`` and
  Rails 8 do): a busy timeout (SQLite's own handler sleeps and tries again
  while the lock is held), ``BEGIN IMMEDIATE`` for writes so the lock is
  taken before the first statement (no deadlock-prone upgrade from a read),
  plain autocommit statements for reads, no retry of ours: a ``BusyError``
  after the busy timeout reaches the caller.
"""

from __future__ import annotations

import enum
import math
import os
import random
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

import apsw

from .connection import SYNCHRONOUS, Connection, TransactionGuard, run_sql
from .errors import GatewayClosed, GatewayError, NestedCallError
from .request import Params, check_many, check_params, check_priority, check_sql
from .result import Result

T = TypeVar("T")
_G = TypeVar("_G", bound="_PerThreadGateway")

# Gateway options that mean nothing without a queue and a worker: accepted and
# ignored, so that one configuration can build any of the classes.
IGNORED_OPTIONS = frozenset({"queue_size", "batch_max", "busy_timeout", "readers", "read_mode",
                             "background_slice", "hang_timeout", "autocheckpoint"})
BULK_CHUNK = 500  # parameter sets per unit in bulk(): the old way's usual batching
_RING = 4096  # recent latencies kept for percentiles

_Unit = Callable[[apsw.Connection, TransactionGuard], T]


class _State(enum.Enum):
    NEW = "new"  # constructed: no connection yet
    RUNNING = "running"  # calls run
    CLOSED = "closed"  # final: every call raises GatewayClosed


class _Handle:
    """One thread's connection; ``in_use`` while a call of that thread runs."""

    __slots__ = ("__weakref__", "conn", "guard", "in_use", "wait_ms")

    def __init__(self, conn: apsw.Connection, guard: TransactionGuard, wait_ms: int) -> None:
        self.conn, self.guard, self.in_use = conn, guard, False
        self.wait_ms = wait_ms  # the connection's busy timeout now


class _Writes(Exception):
    """Raised by BusyGateway's read attempt: a statement of the text can write."""


def _only_reads(_cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
    """An exec tracer: SQLite's word on each statement, before it steps."""
    if _cursor.is_readonly:
        return True
    raise _Writes


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
    return float(value)


class _PerThreadGateway:
    """What both baselines share: a connection per thread, one unit per call.

    Subclasses say how a unit begins (``_BEGIN``), how long a connection waits
    for a lock by itself (``_busy_ms``), and whether a ``BusyError`` is tried
    again (``_backoff``).
    """

    _BEGIN: ClassVar[str] = "BEGIN"
    _IGNORED: ClassVar[frozenset[str]] = IGNORED_OPTIONS

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 synchronous: str = "FULL", **ignored: Any) -> None:
        if set(ignored) - self._IGNORED:
            raise TypeError(f"unexpected options: {sorted(set(ignored) - self._IGNORED)}")
        if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self.path, self.timeout = os.fspath(path), _check_seconds("timeout", timeout)
        self.synchronous = synchronous.upper()
        self._busy_ms = 0  # the busy timeout of each connection, once in WAL mode
        self._local = threading.local()  # .handle: this thread's; .busy: inside a call
        # Our own statements are prepared with the guard off and apsw caches
        # statements by text: a nonce keeps a caller's "BEGIN" from matching.
        nonce = secrets.token_hex(8)
        self._begin, self._commit = f"{self._BEGIN} /* {nonce} */", f"COMMIT /* {nonce} */"
        self._rollback = f"ROLLBACK /* {nonce} */"
        # _lock guards _state, _handles, each handle's in_use, and the figures below.
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()  # gone with their thread
        self._requests = self._errors = self._retries = self._busy = 0
        self._latencies: deque[float] = deque(maxlen=_RING)

    def start(self: _G) -> _G:
        """Open this thread's connection (the file goes to WAL mode); return self."""
        with self._lock:
            if self._state is not _State.NEW:
                raise GatewayError(f"gateway is {self._state.value}; it can be started once")
            self._state = _State.RUNNING
        self._handle()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Refuse new calls, close idle connections; idempotent. Running calls end
        by their own deadline, then close theirs (``timeout`` is for Gateway's API)."""
        with self._lock:
            self._state = _State.CLOSED
            idle = [handle for handle in self._handles if not handle.in_use]
        for handle in idle:  # no thread can start using these any more
            handle.conn.close()

    def __enter__(self: _G) -> _G:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def execute(self, sql: str, params: Params = (), *, timeout: float | None = None,
                priority: str = "interactive") -> Result:
        """Run ``sql`` (one or more statements) as one unit; return once committed.

        Raises:
            apsw.BusyError: still locked at the call's deadline.
            apsw.Error: SQLite's own error, unchanged; nothing of the call is kept.
            TransactionControlError: ``sql`` holds BEGIN/COMMIT/SAVEPOINT/...
            GatewayClosed: the gateway is closed.
        """
        sql, params = check_sql(sql), check_params(params)
        check_priority(priority)
        return self._call(lambda conn, guard: run_sql(conn, guard, sql, params), timeout)

    def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                    timeout: float | None = None, priority: str = "interactive") -> Result:
        """Run one statement once per parameter set, all as one unit."""
        check_priority(priority)
        sql, many = check_sql(sql), check_many(seq_of_params)  # replayable
        return self._call(lambda conn, guard: run_sql(conn, guard, sql, many, many=True),
                          timeout)

    def transaction(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None,
                    priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` as one unit; return its value.

        ``conn`` offers ``execute``/``executemany`` returning :class:`Result`.
        If fn raises, its writes are rolled back and the exception re-raised.
        fn runs again on every retry. A gateway call inside fn raises
        :class:`NestedCallError` (use ``conn``).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        check_priority(priority)

        def unit(conn: apsw.Connection, guard: TransactionGuard) -> T:
            handle = Connection(conn, guard)
            try:
                return fn(handle, *args, **kwargs)
            finally:
                handle.close()
        return self._call(unit, timeout)

    def submit(self, sql: str, params: Params = (), *,
               priority: str = "interactive") -> Future[Result]:
        """Run ``sql`` now in this thread (no queue); return a done Future.
        Input and state errors raise at once; SQLite's errors are in the Future."""
        check_priority(priority)
        return self._done(self.execute, check_sql(sql), check_params(params))

    def post(self, sql: str, params: Params = (), *, priority: str = "interactive",
             block: bool = False, timeout: float | None = None) -> None:
        """Run ``sql`` now in this thread, like :meth:`execute`; its error is raised here.
        (``block`` and ``timeout`` are accepted for the gateway's signature.)"""
        check_priority(priority)
        self.execute(check_sql(sql), check_params(params))

    def failures(self) -> list[Any]:
        """Always empty: :meth:`post` raises its errors in the caller."""
        return []

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", **kwargs: Any) -> Future[T]:
        """Run :meth:`transaction` now, in this thread; return a done Future."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        check_priority(priority)
        return self._done(self.transaction, fn, *args, **kwargs)

    def bulk(self, sql: str, seq_of_params: Iterable[Params], *, timeout: float | None = None,
             priority: str = "background") -> int:
        """Run one statement per parameter set in units of BULK_CHUNK, each
        a unit of its own; return the rows changed. Not atomic as a whole."""
        check_priority(priority)
        rows = check_many(seq_of_params)
        return sum(self.executemany(sql, rows[start:start + BULK_CHUNK], timeout=timeout).rowcount
                   for start in range(0, len(rows), BULK_CHUNK))

    def run_exclusive(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None,
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

    def flush(self, timeout: float | None = None) -> None:
        """Return at once: every call committed before it returned. GatewayClosed if closed."""
        self._check_running()

    def stats(self) -> dict[str, Any]:
        """Calls answered, errors, retries, BusyErrors met, and latency p50/p99
        in ms over the most recent calls. Approximate: a snapshot."""
        with self._lock:
            recent = sorted(self._latencies)
            figures: dict[str, Any] = {
                "state": self._state.value, "requests": self._requests,
                "errors": self._errors, "retries": self._retries, "busy_errors": self._busy}
        for name, q in (("latency_p50_ms", 0.50), ("latency_p99_ms", 0.99)):  # nearest rank
            figures[name] = recent[max(1, math.ceil(q * len(recent))) - 1] * 1000 if recent else 0.0
        return figures

    # -- what the subclasses change ----------------------------------------------

    def _backoff(self, attempt: int, deadline: float) -> bool:
        """After a BusyError: wait before the next attempt and return True, or
        return False to raise it."""
        return False

    # -- plumbing ----------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state is _State.NEW:
            raise GatewayError("gateway is not started: call start() or use 'with'")
        if self._state is _State.CLOSED:
            raise GatewayClosed("gateway is closed")

    def _handle(self) -> _Handle:
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            conn = apsw.Connection(self.path)
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

    def _call(self, unit: _Unit[T], timeout: float | None,
              read: _Unit[T] | None = None) -> T:
        """Run ``unit`` between BEGIN and COMMIT on this thread's connection.
        With ``read``, first try that in autocommit; it raises _Writes to say
        the call needs the unit."""
        if getattr(self._local, "busy", False):
            raise NestedCallError(f"{type(self).__name__} called inside a transaction fn: "
                                  "use its conn")
        began = time.monotonic()
        wait = self.timeout if timeout is None else _check_seconds("timeout", timeout)
        deadline = began + wait
        self._check_running()
        handle = self._handle()
        with self._lock:
            handle.in_use = running = self._state is _State.RUNNING
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
                        except _Writes:
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
                closed = self._state is _State.CLOSED
                self._requests += 1
                self._errors += not ok
                self._retries += attempt
                self._busy += busy
                self._latencies.append(time.monotonic() - began)
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


class RetryGateway(_PerThreadGateway):
    """Per-thread connections and whole-unit retries on ``BusyError``; thread-safe.

    Every call runs in the caller's thread and returns once committed.

    Args:
        path: the database file (created if missing; start() puts it in WAL mode).
        timeout: seconds a call may spend retrying (its deadline); each call
            may override it. ``timeout=None`` on a call means this default,
            not "no limit" as in Gateway: a retry loop needs a deadline.
        synchronous: ``"FULL"``, ``"NORMAL"``, ``"OFF"`` or ``"EXTRA"``.
        max_delay: the cap of one backoff sleep, in seconds.
        base_delay: the first backoff cap; it doubles on each attempt.
        **ignored: ``queue_size``, ``batch_max``, ``busy_timeout``,
            ``readers``, ``read_mode``, ``background_slice``, ``hang_timeout``
            and ``autocheckpoint`` are accepted
            and ignored; any other name is a TypeError.

    Every call also accepts the gateway's ``priority=`` keyword and ignores
    it: the old way has no queue to order.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 synchronous: str = "FULL", max_delay: float = 2.0, base_delay: float = 0.001,
                 **ignored: Any) -> None:
        super().__init__(path, timeout=timeout, synchronous=synchronous, **ignored)
        self.max_delay = _check_seconds("max_delay", max_delay)
        self.base_delay = _check_seconds("base_delay", base_delay)

    def _backoff(self, attempt: int, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        cap = min(self.max_delay, self.base_delay * 2.0 ** min(attempt, 60))
        time.sleep(min(left, random.uniform(0, cap)))
        return True


class BusyGateway(_PerThreadGateway):
    """Per-thread connections, a busy timeout, ``BEGIN IMMEDIATE``; thread-safe.

    What Django 5.1 (``transaction_mode="IMMEDIATE"``) and Rails 8 do. Every
    call runs in the caller's thread and returns once committed (or, for a
    read, once its rows are fetched). Writes (:meth:`transaction`,
    :meth:`executemany`, and :meth:`execute` of a text with a statement that
    SQLite says can write) run as ``BEGIN IMMEDIATE`` ... ``COMMIT``: the
    connection waits for the write lock up to ``busy_timeout`` in SQLite's
    own busy handler, then ``apsw.BusyError`` reaches the caller (there is no
    retry of ours, so a transaction fn runs once). Reads (:meth:`execute` of a
    text whose statements only read) run as plain autocommit statements,
    each on a fresh WAL snapshot, and never wait for writers.

    Args:
        path: the database file (created if missing; start() puts it in WAL mode).
        timeout: seconds a call may wait for the lock: a call's ``timeout``
            (or this default) lower than ``busy_timeout`` lowers that wait.
        synchronous: ``"FULL"``, ``"NORMAL"``, ``"OFF"`` or ``"EXTRA"``.
        busy_timeout: seconds a write waits for the lock (default 5, as
            Django's and Rails's).
        **ignored: ``queue_size``, ``batch_max``, ``readers``, ``read_mode``,
            ``background_slice``, ``hang_timeout`` and ``autocheckpoint`` are
            accepted and ignored; any other name is a TypeError.

    Every call also accepts the gateway's ``priority=`` keyword and ignores it.
    """

    _BEGIN = "BEGIN IMMEDIATE"
    _IGNORED = IGNORED_OPTIONS - {"busy_timeout"}

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 synchronous: str = "FULL", busy_timeout: float = 5.0, **ignored: Any) -> None:
        super().__init__(path, timeout=timeout, synchronous=synchronous, **ignored)
        self.busy_timeout = _check_seconds("busy_timeout", busy_timeout)
        self._busy_ms = int(self.busy_timeout * 1000)

    def execute(self, sql: str, params: Params = (), *, timeout: float | None = None,
                priority: str = "interactive") -> Result:
        """Run ``sql``: a read in autocommit, anything that can write as one
        ``BEGIN IMMEDIATE`` unit; return once answered.

        Raises:
            apsw.BusyError: a write found the lock held past ``busy_timeout``.
            apsw.Error: SQLite's own error, unchanged; nothing of a write is kept.
            TransactionControlError: ``sql`` holds BEGIN/COMMIT/SAVEPOINT/...
            GatewayClosed: the gateway is closed.
        """
        sql, params = check_sql(sql), check_params(params)
        check_priority(priority)

        def read(conn: apsw.Connection, guard: TransactionGuard) -> Result:
            conn.exec_trace = _only_reads  # statements before a write only read
            try:
                return run_sql(conn, guard, sql, params)
            finally:
                conn.exec_trace = None

        return self._call(lambda conn, guard: run_sql(conn, guard, sql, params), timeout,
                          read=read)
