"""Read-only connections that serve reads beside the writer (WAL).

Two ways to run them, chosen by ``Gateway(read_mode=...)``:

- ``"inline"``: each calling thread owns a read-only connection (up to
  ``readers`` threads) and runs its reads in place: no hand-off at all.
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
from typing import Any

import apsw

from .connection import TransactionGuard, run_sql
from .errors import GatewayClosed
from .request import STOP, Kind, Request, wait_for
from .requestqueue import RequestQueue, fail_pending
from .result import Result

logger = logging.getLogger(__name__)


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
    """One read-only connection, owned by one thread."""

    def __init__(self, path: str, busy_timeout: float, vfs: str | None = None) -> None:
        self.lock = threading.Lock()  # held while reading; close() takes it too
        self.closed = False
        self.served = 0  # reads answered here (written by the owner only)
        self.passed = 0  # statements sent on to the writer
        self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY, vfs=vfs)
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
        self.closed = True
        self.conn.close()


class ThreadReaders:
    """``"inline"`` mode: each calling thread owns one reader and reads in place.

    A thread's first read opens its connection (up to ``size`` threads; the
    reads of threads past that go through the writer). A thread that ends
    leaves its connection to be closed when a new thread needs the place.
    """

    def __init__(self, path: str, size: int, busy_timeout: float,
                 vfs: str | None = None) -> None:
        self._path = path
        self._size = size
        self._busy_timeout = busy_timeout
        self._vfs = vfs
        self._local = threading.local()
        # _lock guards _owned and _closed. Each reader's own .lock is held
        # while it reads, so close() never closes a connection in use.
        self._lock = threading.Lock()
        self._owned: dict[threading.Thread, Reader] = {}
        self._closed = False
        self._retired = [0, 0]  # served, passed: of readers already closed

    @property
    def reads(self) -> int:
        return self._retired[0] + sum(r.served for r in list(self._owned.values()))

    @property
    def to_writer(self) -> int:
        return self._retired[1] + sum(r.passed for r in list(self._owned.values()))

    def _retire(self, reader: Reader) -> None:
        self._retired[0] += reader.served
        self._retired[1] += reader.passed
        reader.close()

    def read(self, sql: str, params: Any, timeout: float | None) -> Result | None:
        reader: Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._adopt()
            if reader is None:
                return None  # no place left: the writer serves this thread
        with reader.lock:
            if reader.closed:
                raise GatewayClosed("gateway is closed")
            result = reader.read(sql, params)
        if result is None:
            reader.passed += 1
        else:
            reader.served += 1
        return result

    def _adopt(self) -> Reader | None:
        thread = threading.current_thread()
        with self._lock:
            if self._closed:
                raise GatewayClosed("gateway is closed")
            if len(self._owned) >= self._size:
                for dead in [t for t in self._owned if not t.is_alive()]:
                    self._retire(self._owned.pop(dead))
            if len(self._owned) >= self._size:
                return None
            reader = Reader(self._path, self._busy_timeout, self._vfs)
            self._owned[thread] = reader
        self._local.reader = reader
        return reader

    def close(self) -> None:
        with self._lock:
            self._closed = True
            owned, self._owned = list(self._owned.values()), {}
        for reader in owned:
            with reader.lock:  # waits for a read in progress to finish
                self._retire(reader)


class ReaderLanes:
    """``"threads"`` mode: reader threads, each owning one connection, fed by a queue."""

    def __init__(self, path: str, size: int, busy_timeout: float, queue_size: int,
                 vfs: str | None = None) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._vfs = vfs
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
            reader = Reader(self._path, self._busy_timeout, self._vfs)
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
