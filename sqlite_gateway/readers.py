"""Read-only connections that serve reads beside the writer (WAL).

Two ways to run them, chosen by ``Gateway(read_mode=...)``:

- ``"inline"`` (:class:`ReaderPool`): up to ``readers`` connections shared
  by every calling thread. A thread takes a free one for one read, runs it in
  place (no hand-off) and gives it back; when all are busy it waits for the
  next one given back. Any number of threads can read: a web app need not
  tell the gateway its thread count.
- ``"threads"`` (:class:`ReaderLanes`): ``readers`` threads, each owning one
  connection for its whole life, fed by a queue (one hand-off each way, like
  the writer; for callers that must not block, such as an event loop).

Routing asks SQLite, not the SQL text: the first time a text is seen, an
exec tracer lets each statement run only if ``sqlite3_stmt_readonly`` says
it cannot write; a text SQLite judged read-only is remembered and runs
untraced from then on, and anything else goes to the writer. Connections are
opened read-only as well, so a write cannot slip through a reader even if
routing were wrong. Read-your-writes holds because each read is a fresh
statement in autocommit (a fresh WAL snapshot) that starts after the
caller's earlier answers, which came after their COMMIT.

Deadlines: SQLite calls a progress handler every few hundred VM steps; past
the caller's deadline, or once the gateway closes, it stops the statement
(``apsw.InterruptError``), so a runaway read never outlives its caller's
patience and ``close()`` never waits for one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import apsw

from .connection import TransactionGuard, run_read, run_sql
from .errors import GatewayClosed, RequestTimeout
from .memo import TextMemo
from .request import FUTURE, STOP, Kind, Request, wait_for
from .requestqueue import RequestQueue, fail_pending
from .result import Result

logger = logging.getLogger(__name__)

_PROGRESS_STEPS = 1000  # VM steps between two looks at the deadline (a point read takes ~100)
_CLOSE_WAIT = 5.0  # seconds close() waits for reads in progress to stop

Setup = Callable[[apsw.Connection], object]  # the connection_setup option


class _ReadGuard(TransactionGuard):
    """Refuses here what the writer refuses (transaction control, ATTACH, the
    settings in ``_OWNED_PRAGMAS``), so a refused setting is never applied on a
    reader either; sends to the writer any other PRAGMA that sets a value."""

    __slots__ = ("to_writer",)

    def __init__(self) -> None:
        super().__init__()
        self.to_writer = False

    def __call__(self, op: int, p1: str | None, p2: str | None,
                 db: str | None, trigger: str | None) -> int:
        verdict = super().__call__(op, p1, p2, db, trigger)
        if verdict == apsw.SQLITE_OK and op == apsw.SQLITE_PRAGMA and p2 is not None:
            self.to_writer = True
            return apsw.SQLITE_DENY
        return verdict


class Reader:
    """One read-only connection, used by one thread at a time."""

    def __init__(self, path: str, busy_timeout: float, vfs: str | None,
                 known_reads: TextMemo[bool], setup: Setup | None = None) -> None:
        self.stop = False  # set by close(): the running statement stops
        self.closed = False
        self.deadline: float | None = None  # the running read's caller's deadline
        self.cancel: threading.Event | None = None  # set: the running read's caller gave up
        self.served = 0  # reads answered here
        self.passed = 0  # texts SQLite judged writes, sent on to the writer
        # Shared by the pool: texts SQLite judged read-only (True: one statement).
        self._known = known_reads
        self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY, vfs=vfs)
        self.conn.set_busy_timeout(int(busy_timeout * 1000))
        self.guard = _ReadGuard()
        self.conn.authorizer = self.guard
        self.conn.set_progress_handler(self._should_stop, _PROGRESS_STEPS)
        if setup is not None:
            try:
                setup(self.conn)  # the connection_setup option: functions, collations...
            except BaseException:
                self.conn.close()
                raise

    def _should_stop(self) -> bool:
        deadline, cancel = self.deadline, self.cancel
        return self.stop or (deadline is not None and time.monotonic() >= deadline) or (
            cancel is not None and cancel.is_set())

    def _only_reads(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        if cursor.is_readonly:
            return True
        self.guard.to_writer = True
        return False  # apsw raises ExecTraceAbort before the statement steps

    def read(self, sql: str, params: Any, deadline: float | None,
             timeout: float | None, hang_limit: float | None = None,
             cancel: threading.Event | None = None) -> Result | None:
        """The statement's Result, or None when SQLite says it must run on the writer.

        Args:
            deadline: when the caller stops waiting (monotonic), or None.
            timeout: the caller's timeout, for the error message.
            hang_limit: when the read has run past the gateway's
                ``hang_timeout`` (monotonic), or None: then it is stopped
                with ``apsw.InterruptError``, as the watchdog stops the writer.
            cancel: once set (by a caller that gave up: a cancelled task),
                the running statement is stopped (``RequestTimeout``).

        Raises:
            RequestTimeout: stopped at ``deadline`` (nothing to undo: a read).
            GatewayClosed: stopped because the gateway is closing.
            apsw.Error: SQLite's own error.
        """
        known = self._known.map.get(sql)  # None: not seen; True: one statement; False: several
        self.guard.to_writer = False
        if hang_limit is not None and (deadline is None or hang_limit < deadline):
            self.deadline = hang_limit
        else:
            self.deadline = deadline
        self.cancel = cancel
        statements: list[str] = []
        try:
            if known:
                result = run_read(self.conn, sql, params)
            else:
                result = run_read(self.conn, sql, params, statements,
                                  None if known is not None else self._only_reads)
        except (apsw.ExecTraceAbort, apsw.AuthError, apsw.ReadOnlyError) as exc:
            # ReadOnlyError: SQLite judged the statement read-only, yet it wrote
            # (PRAGMA optimize runs ANALYZE): nothing was written here (the
            # connection is read-only), and the writer can run it.
            if self.guard.to_writer or known is not None or isinstance(exc, apsw.ReadOnlyError):
                self._known.forget(sql)
                self.passed += 1
                return None
            if self.guard.refused or self.guard.refused_pragma is not None:
                # The guard's own refusals (transaction control, a setting),
                # with the same errors as on the writer.
                return run_sql(self.conn, self.guard, sql, params)
            raise
        except apsw.InterruptError:
            if self.stop:
                raise GatewayClosed("gateway closed while this read ran") from None
            if (deadline is not None and time.monotonic() >= deadline) or (
                    cancel is not None and cancel.is_set()):
                raise RequestTimeout(timeout or 0.0, started=True, interrupted=True) from None
            raise
        finally:
            self.deadline = None
            self.cancel = None
        if known is None:
            self._known.remember(sql, len(statements) == 1)
        self.served += 1
        return result

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close()
        except apsw.Error as exc:  # closing a read-only connection: nothing to lose
            logger.debug("closing a reader: %s: %s", type(exc).__name__, exc)


class ReaderPool:
    """``"inline"`` mode: a pool of up to ``size`` readers shared by every thread.

    Thread-safe. ``list.pop()`` and ``list.append()`` are atomic, so taking
    and giving back a free reader needs no lock; ``_lock`` guards opening new
    ones, waiting for one, and closing.
    """

    def __init__(self, path: str, size: int, busy_timeout: float,
                 vfs: str | None = None, hang_timeout: float | None = None,
                 setup: Setup | None = None) -> None:
        self._path = path
        self._size = size
        self._setup = setup
        self._hang_timeout = hang_timeout
        self._busy_timeout = busy_timeout
        self._vfs = vfs
        self._known: TextMemo[bool] = TextMemo()
        self._free: list[Reader] = []  # a stack: the most recently used (warm cache) on top
        self._all: list[Reader] = []
        self._lock = threading.Lock()
        self._given_back = threading.Condition(self._lock)
        self._waiting = 0
        self._closed = False

    def start(self) -> None:
        """Open the first reader now, so a failing ``connection_setup`` is known at start.

        Raises:
            what opening it raised (the gateway's start() then fails).
        """
        reader = Reader(self._path, self._busy_timeout, self._vfs, self._known, self._setup)
        with self._lock:
            self._all.append(reader)
            self._free.append(reader)

    @property
    def reads(self) -> int:
        return sum(reader.served for reader in list(self._all))

    @property
    def to_writer(self) -> int:
        return sum(reader.passed for reader in list(self._all))

    def read(self, sql: str, params: Any, timeout: float | None,
             cancel: threading.Event | None = None) -> Result | None:
        """Run a read in the calling thread; None when it must go to the writer.

        Waits for a free reader when all ``size`` are busy (within ``timeout``).
        ``cancel``, once set, stops the running statement (see :meth:`Reader.read`).
        """
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        hang = self._hang_timeout
        try:
            reader = self._free.pop()
        except IndexError:
            reader = self._take(deadline, timeout)
        try:
            if self._closed:
                raise GatewayClosed("gateway is closed")
            return reader.read(sql, params, deadline, timeout,
                               None if hang is None else now + hang, cancel)
        finally:
            self._give_back(reader)

    def _take(self, deadline: float | None, timeout: float | None) -> Reader:
        with self._lock:
            while True:
                if self._closed:
                    raise GatewayClosed("gateway is closed")
                if self._free:
                    return self._free.pop()
                if len(self._all) < self._size:
                    reader = Reader(self._path, self._busy_timeout, self._vfs, self._known,
                                    self._setup)
                    self._all.append(reader)
                    return reader
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RequestTimeout(timeout or 0.0, started=False)
                self._waiting += 1
                try:
                    self._given_back.wait(remaining)
                finally:
                    self._waiting -= 1

    def _give_back(self, reader: Reader) -> None:
        if self._closed:
            with self._lock:
                reader.close()
                self._given_back.notify_all()
            return
        self._free.append(reader)
        if self._waiting:
            with self._lock:
                self._given_back.notify()

    def close(self) -> None:
        """Stop reads in progress and close every connection; bounded."""
        with self._lock:
            self._closed = True
            for reader in self._all:
                reader.stop = True  # the progress handler stops a running statement
            free, self._free = self._free, []
            for reader in free:
                reader.close()
            busy = [reader for reader in self._all if reader not in free]
            deadline = time.monotonic() + _CLOSE_WAIT
            while busy and time.monotonic() < deadline:
                self._given_back.wait(0.05)  # each closes itself as it is given back
                busy = [reader for reader in busy if not reader.closed]
            self._given_back.notify_all()


class ReaderLanes:
    """``"threads"`` mode: reader threads, each owning one connection, fed by a queue."""

    def __init__(self, path: str, size: int, busy_timeout: float, queue_size: int,
                 vfs: str | None = None, hang_timeout: float | None = None,
                 setup: Setup | None = None) -> None:
        self._path = path
        self._setup = setup
        self._opened = 0  # reader threads done opening (or failing to)
        self._open_error: BaseException | None = None
        self._hang_timeout = hang_timeout
        self._busy_timeout = busy_timeout
        self._vfs = vfs
        self._known: TextMemo[bool] = TextMemo()
        self._queue = RequestQueue(queue_size)
        self._readers: list[Reader] = []
        self._threads = [threading.Thread(target=self._run, daemon=True,
                                          name=f"sqlite-gateway-reader-{i}")
                         for i in range(size)]
        self._lock = threading.Lock()  # guards the counters
        self._ready = threading.Condition(self._lock)  # a thread opened (or failed to)
        self.reads = 0
        self.to_writer = 0

    def start(self) -> None:
        """Start the reader threads; return once each has opened its connection.

        Raises:
            the first error a thread met opening its reader (a failing
            ``connection_setup``, say); the caller then closes the lanes.
        """
        for thread in self._threads:
            thread.start()
        with self._lock:
            while self._opened < len(self._threads):
                self._ready.wait()
            error = self._open_error
        if error is not None:
            raise error

    def read(self, sql: str, params: Any, timeout: float | None,
             cancel: threading.Event | None = None) -> Result | None:
        request = Request(Kind.EXECUTE, sql, params, answer=FUTURE)
        # The reader stops the statement itself at the caller's deadline.
        now, hang = time.monotonic(), self._hang_timeout
        request.args = (None if timeout is None else now + timeout, timeout,
                        None if hang is None else now + hang, cancel)
        self._queue.put(request)
        return wait_for(request, timeout)  # type: ignore[no-any-return]

    def _run(self) -> None:
        try:
            reader = Reader(self._path, self._busy_timeout, self._vfs, self._known,
                            self._setup)
        except BaseException as exc:
            logger.critical("reader could not open %s", self._path, exc_info=True)
            self._queue.close(f"gateway is broken: a reader could not open: {exc}")
            fail_pending(self._queue.drain(), lambda: GatewayClosed("reader failed to open"))
            with self._lock:
                self._opened += 1
                self._open_error = self._open_error or exc
                self._ready.notify_all()
            return
        with self._lock:
            self._readers.append(reader)
            self._opened += 1
            self._ready.notify_all()
        try:
            while True:
                batch = self._queue.get_batch(1)
                if batch is STOP:
                    return
                assert isinstance(batch, list)
                for request in batch:
                    if not request.claim():
                        continue
                    deadline, timeout, hang_limit, cancel = request.args
                    try:
                        result = reader.read(request.sql or "", request.params, deadline,
                                             timeout, hang_limit, cancel)
                    except BaseException as exc:  # goes back to its own caller
                        request.set_exception(exc)
                        del exc  # break the frame <-> exception cycle
                        continue
                    with self._lock:
                        self.reads += result is not None
                        self.to_writer += result is None
                    request.set_result(result)
        finally:
            reader.close()

    def close(self) -> None:
        """Stop reads in progress, answer what is queued, stop the threads; bounded."""
        self._queue.close("gateway is closed")
        fail_pending(self._queue.drain(), lambda: GatewayClosed("gateway is closed"))
        with self._lock:
            for reader in self._readers:
                reader.stop = True
        deadline = time.monotonic() + _CLOSE_WAIT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
