"""Read-only connections that serve reads beside the writer (WAL).

Two ways to run them, chosen by ``Gateway(read_mode=...)``:

- ``"inline"``: a pool of ``readers`` connections; a caller borrows one and
  runs its read in its own thread (no hand-off). A connection is used by
  exactly one thread at a time.
- ``"threads"``: ``readers`` threads, each owning one connection for its
  whole life, fed by a queue (one hand-off each way, like the writer).

Routing asks SQLite, not the SQL text: an exec tracer lets a statement run
only if ``sqlite3_stmt_readonly`` says it cannot write; anything else is
sent back to the writer. Connections are opened read-only as well, so a
write cannot slip through a reader even if routing were wrong.
Read-your-writes holds because each read is a fresh statement in autocommit
(a fresh WAL snapshot) that starts after the caller's earlier answers, which
came after their COMMIT.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import apsw

from .connection import TransactionGuard, run_sql
from .errors import GatewayClosed, RequestTimeout
from .request import STOP, Kind, Request, wait_for
from .requestqueue import RequestQueue, fail_pending
from .result import Result

logger = logging.getLogger(__name__)


class _ReadGuard(TransactionGuard):
    """Also sends to the writer what would change a reader's own state:
    ATTACH/DETACH and PRAGMAs that set a value."""

    __slots__ = ("to_writer",)

    def __init__(self) -> None:
        super().__init__()
        self.to_writer = False

    def __call__(self, op: int, p1: str | None, p2: str | None,
                 db: str | None, trigger: str | None) -> int:
        if op in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH) or (
                op == apsw.SQLITE_PRAGMA and p2 is not None):
            self.to_writer = True
            return apsw.SQLITE_DENY
        return super().__call__(op, p1, p2, db, trigger)


class Reader:
    """One read-only connection; used by one thread at a time."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        self.conn.set_busy_timeout(int(busy_timeout * 1000))
        self.guard = _ReadGuard()
        self.conn.authorizer = self.guard
        self.conn.exec_trace = self._only_reads

    def _only_reads(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        if cursor.is_readonly:
            return True
        self.guard.to_writer = True
        return False  # apsw raises ExecTraceAbort before the statement steps

    def read(self, sql: str, params: Any) -> Result | None:
        """The statement's Result, or None when it must run on the writer."""
        self.guard.to_writer = False
        try:
            return run_sql(self.conn, self.guard, sql, params)
        except (apsw.ExecTraceAbort, apsw.AuthError):
            if self.guard.to_writer:
                return None
            raise

    def close(self) -> None:
        self.conn.close()


class ReaderPool:
    """``"inline"`` mode: callers borrow a connection and read in their own thread."""

    def __init__(self, path: str, size: int, busy_timeout: float) -> None:
        self._path = path
        self._size = size
        self._busy_timeout = busy_timeout
        # _lock guards _idle, _opened, _closed and the counters; _free is
        # notified when a connection is returned.
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._idle: list[Reader] = []
        self._opened = 0
        self._closed = False
        self.reads = 0
        self.to_writer = 0

    def read(self, sql: str, params: Any, timeout: float | None) -> Result | None:
        reader = self._borrow(timeout)
        routed = None
        try:
            routed = reader.read(sql, params)
            return routed
        finally:
            self._give_back(reader, routed is not None)

    def _borrow(self, timeout: float | None) -> Reader:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._free:
            while True:
                if self._closed:
                    raise GatewayClosed("gateway is closed")
                if self._idle:
                    return self._idle.pop()
                if self._opened < self._size:
                    self._opened += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RequestTimeout(timeout or 0.0, started=False)
                self._free.wait(remaining)
        try:  # open outside the lock: it may wait on the busy timeout
            return Reader(self._path, self._busy_timeout)
        except BaseException:
            with self._free:
                self._opened -= 1
                self._free.notify()
            raise

    def _give_back(self, reader: Reader, served: bool) -> None:
        with self._free:
            self.reads += served
            self.to_writer += not served
            if not self._closed:
                self._idle.append(reader)
                self._free.notify()
                return
            self._opened -= 1
        reader.close()  # returned after close(): the borrower closes it

    def close(self) -> None:
        with self._free:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            self._free.notify_all()
        for reader in idle:
            reader.close()


class ReaderLanes:
    """``"threads"`` mode: reader threads, each owning one connection, fed by a queue."""

    def __init__(self, path: str, size: int, busy_timeout: float, queue_size: int) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._queue = RequestQueue(queue_size)
        self._threads = [threading.Thread(target=self._run, daemon=True,
                                          name=f"sqlite-gateway-reader-{i}")
                         for i in range(size)]
        self._lock = threading.Lock()  # guards the counters
        self.reads = 0
        self.to_writer = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def read(self, sql: str, params: Any, timeout: float | None) -> Result | None:
        request = Request(Kind.EXECUTE, sql, params)
        self._queue.put(request)
        return wait_for(request, timeout)  # type: ignore[no-any-return]

    def _run(self) -> None:
        try:
            reader = Reader(self._path, self._busy_timeout)
        except BaseException as exc:
            logger.critical("reader could not open %s", self._path, exc_info=True)
            self._queue.close(f"gateway is broken: a reader could not open: {exc}")
            fail_pending(self._queue.drain(), lambda: GatewayClosed("reader failed to open"))
            return
        try:
            while True:
                batch = self._queue.get_batch(1)
                if batch is STOP:
                    return
                assert isinstance(batch, list)
                for request in batch:
                    if not request.claim():
                        continue
                    try:
                        result = reader.read(request.sql or "", request.params)
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
        self._queue.close("gateway is closed")
        for thread in self._threads:
            thread.join()
