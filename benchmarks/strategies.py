"""Every way compare.py reaches the database, behind one small interface.

Each strategy runs the same SQL (``workloads.py``) on the same file settings (WAL,
``synchronous`` FULL unless NORMAL is asked), all on apsw except peewee:

- ``gateway`` (``readers=0``), ``gateway-nobatch`` (``batch_max=1``),
  ``gateway+readers`` (``readers=`` the thread count, or ``--readers``) and
  ``gateway+reader-threads`` (two reader threads): ``sqlite_gateway.Gateway``;
- ``retry``: each thread its own connection, busy timeout 0, the whole unit retried
  with backoff (``benchmarks/baselines.py`` RetryGateway: what this project replaces);
- ``busy``: each thread its own connection, busy timeout 5 s, ``BEGIN IMMEDIATE``
  (Django 5.1's ``transaction_mode="IMMEDIATE"``, Rails 8);
- ``direct``: each thread its own connection, plain reads: the floor for reads;
- ``bare`` and ``naive``: the floors for writes (``floors.py``);
- ``peewee``: ``playhouse.sqliteq.SqliteQueueDatabase`` as it ships (stdlib sqlite3;
  it cannot run a transaction fn: ``atomic()`` raises);
- ``ceiling``: one thread, one connection, every operation of the window in one
  transaction: the limit of this machine.

A strategy runs only the workloads listed in its ``workloads``; the others are n/a.
"""

from __future__ import annotations

import threading
from typing import Any

import apsw
from .floors import BareLoop, NaiveQueue
from .workloads import INSERT_VIEW, PAGES, READ_COUNTER, WORKLOADS, pageview

from sqlite_gateway import Gateway
from .baselines import RetryGateway

BUSY_TIMEOUT_S = 5.0  # busy's, and the gateways'
CALL_TIMEOUT = 30.0  # one caller's longest wait for one answer (retry: its deadline)
JOIN_GRACE = CALL_TIMEOUT + 15.0  # past the deadline, how long to wait for callers
READER_THREADS = 2  # gateway+reader-threads: one per core
WRITES = ("pageview-fn", "pageview-trigger")


class NotAvailable(Exception):
    """The strategy cannot run here (reported as n/a, not as a failure)."""


def insert_view(conn: Any, page: str, ts: float) -> None:
    """The single statement of ``pageview-trigger`` (the trigger counts it)."""
    conn.execute(INSERT_VIEW, (page, ts))


def apsw_connection(path: str, synchronous: str, busy_timeout: float,
                    vfs: str | None = None) -> apsw.Connection:
    conn = apsw.Connection(path, vfs=vfs)
    conn.set_busy_timeout(int(busy_timeout * 1000))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(f"PRAGMA synchronous={synchronous}")  # one PRAGMA per call: see apsw
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Strategy:
    """One way to reach the database, shared by every caller thread of a cell.

    ``write_fn``, ``write_trigger`` and ``read`` are called from many threads at
    once and return only once done (committed, for a write); they raise on failure.
    """

    workloads: tuple[str, ...] = WORKLOADS
    single_thread = False  # True: the cell runs one caller whatever the thread count

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        # A registered VFS every connection of the strategy opens through, by
        # name (the fsync-delay VFS of fsync_sweep.py); None: SQLite's default.
        self.vfs: str | None = None

    def open(self) -> None: ...

    def enter_thread(self) -> None:
        """In each caller thread before the window: open what it opens per thread."""

    def write_fn(self, page: str, ts: float) -> None:
        raise NotImplementedError

    def write_trigger(self, page: str, ts: float) -> None:
        raise NotImplementedError

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def finish(self) -> None:
        """After the window, before the clock stops (the ceiling commits here)."""

    def close(self) -> None: ...

    def figures(self) -> dict[str, Any]:
        return {}


class GatewayStrategy(Strategy):
    def __init__(self, path: str, synchronous: str, **options: Any) -> None:
        super().__init__(path, synchronous)
        self.options = options

    def open(self) -> None:
        try:
            self.db = Gateway(self.path, synchronous=self.synchronous, timeout=CALL_TIMEOUT,
                              busy_timeout=BUSY_TIMEOUT_S, vfs=self.vfs, **self.options)
        except (TypeError, ValueError) as exc:  # an option this version does not have
            raise NotAvailable(f"Gateway({self.options}): {exc}") from None
        self.db.start()

    def enter_thread(self) -> None:
        # A thread's first read may open its reader: do it before the clock starts,
        # as busy and direct open their connections (a cold start is not steady state).
        if self.options.get("readers"):
            self.db.execute(READ_COUNTER, (PAGES[0],))

    def write_fn(self, page: str, ts: float) -> None:
        self.db.transaction(pageview, page, ts)

    def write_trigger(self, page: str, ts: float) -> None:
        self.db.execute(INSERT_VIEW, (page, ts))

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.execute(sql, params).scalar()

    def close(self) -> None:
        self.db.close(timeout=JOIN_GRACE)

    def figures(self) -> dict[str, Any]:
        stats = self.db.stats()
        return {"batch_mean": stats.get("batch_mean", 0.0), "reads_on_readers": stats.get("reads"),
                "reads_to_writer": stats.get("reads_to_writer")}


class RetryStrategy(Strategy):
    def open(self) -> None:
        self.db = RetryGateway(self.path, synchronous=self.synchronous,
                               timeout=CALL_TIMEOUT, vfs=self.vfs).start()

    def enter_thread(self) -> None:
        self.db.execute("SELECT 1")  # opens this thread's connection

    def write_fn(self, page: str, ts: float) -> None:
        self.db.transaction(pageview, page, ts)

    def write_trigger(self, page: str, ts: float) -> None:
        self.db.execute(INSERT_VIEW, (page, ts))

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.execute(sql, params).scalar()

    def close(self) -> None:
        self.db.close()

    def figures(self) -> dict[str, Any]:
        return {"retries": self.db.stats()["retries"]}


class BusyStrategy(Strategy):
    """Per-thread connections that wait in SQLite's busy handler, BEGIN IMMEDIATE."""

    def open(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()  # guards conns
        self.conns: list[apsw.Connection] = []

    def enter_thread(self) -> None:
        self.conn()

    def conn(self) -> apsw.Connection:
        conn: apsw.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = apsw_connection(self.path, self.synchronous,
                                                     BUSY_TIMEOUT_S, self.vfs)
            with self.lock:
                self.conns.append(conn)
        return conn

    def _unit(self, fn: Any, page: str, ts: float) -> None:
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(conn, page, ts)
            conn.execute("COMMIT")
        except BaseException:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
            raise

    def write_fn(self, page: str, ts: float) -> None:
        self._unit(pageview, page, ts)

    def write_trigger(self, page: str, ts: float) -> None:
        self._unit(insert_view, page, ts)

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.conn().execute(sql, params).fetchall()[0][0]  # autocommit

    def close(self) -> None:
        with self.lock:
            for conn in self.conns:
                conn.close()


class DirectStrategy(BusyStrategy):
    """The read floor: each thread reads on its own connection (busy, for reads only)."""

    workloads = ("point-read",)


class FloorStrategy(Strategy):
    """``bare`` or ``naive`` (floors.py) on one connection."""

    workloads = WRITES

    def __init__(self, path: str, synchronous: str, design: type[BareLoop | NaiveQueue]) -> None:
        super().__init__(path, synchronous)
        self.design = design

    def open(self) -> None:
        self.conn = apsw_connection(self.path, self.synchronous, BUSY_TIMEOUT_S, self.vfs)
        self.loop = self.design(self.conn).start()

    def write_fn(self, page: str, ts: float) -> None:
        self.loop.call(pageview, page, ts)

    def write_trigger(self, page: str, ts: float) -> None:
        self.loop.call(insert_view, page, ts)

    def close(self) -> None:
        self.loop.stop()
        self.conn.close()


class PeeweeStrategy(Strategy):
    """SqliteQueueDatabase as it ships: writes queued to its writer thread,
    SELECTs on the caller's own (thread-local) connection."""

    workloads = ("pageview-trigger", "point-read")

    def open(self) -> None:
        if self.vfs is not None:
            raise NotAvailable("peewee opens its files through the stdlib sqlite3, which "
                               "cannot use an apsw VFS")
        try:  # stdlib sqlite3: this child only; it never opens the file with apsw
            from playhouse.sqliteq import SqliteQueueDatabase
        except ImportError:
            raise NotAvailable("peewee is not installed (pip install peewee)") from None

        self.db = SqliteQueueDatabase(
            self.path, results_timeout=CALL_TIMEOUT,
            pragmas={"journal_mode": "wal", "synchronous": self.synchronous, "foreign_keys": 1})

    def enter_thread(self) -> None:
        self.db.connect(reuse_if_open=True)  # this thread's connection, for its reads

    def write_trigger(self, page: str, ts: float) -> None:
        self.db.execute_sql(INSERT_VIEW, (page, ts)).fetchall()  # waits; raises its error

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        cursor = self.db.execute_sql(sql, params)
        try:
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def close(self) -> None:
        # stop() joins the writer with no timeout: bound it from here.
        stopper = threading.Thread(target=self.db.stop, daemon=True)
        stopper.start()
        stopper.join(JOIN_GRACE)
        if stopper.is_alive():
            raise RuntimeError(f"peewee's writer did not stop within {JOIN_GRACE:.0f} s")


class CeilingStrategy(Strategy):
    """One thread, one connection, every operation in one transaction."""

    workloads = WRITES
    single_thread = True

    def open(self) -> None:
        self.conn = apsw_connection(self.path, self.synchronous, BUSY_TIMEOUT_S, self.vfs)
        self.conn.execute("BEGIN IMMEDIATE")

    def write_fn(self, page: str, ts: float) -> None:
        pageview(self.conn, page, ts)

    def write_trigger(self, page: str, ts: float) -> None:
        insert_view(self.conn, page, ts)

    def finish(self) -> None:
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


STRATEGIES = ("retry", "busy", "direct", "peewee", "naive", "bare", "gateway-nobatch",
              "gateway", "gateway+readers", "gateway+reader-threads", "ceiling")


def strategy_class(name: str) -> type[Strategy]:
    return {"retry": RetryStrategy, "busy": BusyStrategy, "direct": DirectStrategy,
            "peewee": PeeweeStrategy, "naive": FloorStrategy, "bare": FloorStrategy,
            "ceiling": CeilingStrategy}.get(name, GatewayStrategy)


def make_strategy(name: str, path: str, synchronous: str, threads: int,
                  readers: int | None = None, vfs: str | None = None) -> Strategy:
    """Build strategy ``name``; ``readers`` (None: ``threads``) for gateway+readers;
    every connection through the registered VFS ``vfs`` (None: SQLite's default)."""
    strategy = _make_strategy(name, path, synchronous, threads, readers)
    strategy.vfs = vfs
    return strategy


def _make_strategy(name: str, path: str, synchronous: str, threads: int,
                   readers: int | None) -> Strategy:
    # readers=0 said explicitly: every statement goes through the writer, whatever the
    # library's default number of readers.
    if name == "gateway":
        return GatewayStrategy(path, synchronous, readers=0)
    if name == "gateway-nobatch":
        return GatewayStrategy(path, synchronous, batch_max=1, readers=0)
    if name == "gateway+readers":
        # Each caller thread may own a reader, as a web app sets readers to its pool size.
        return GatewayStrategy(path, synchronous, readers=readers or threads)
    if name == "gateway+reader-threads":
        return GatewayStrategy(path, synchronous, readers=READER_THREADS, read_mode="threads")
    if name in ("bare", "naive"):
        return FloorStrategy(path, synchronous, BareLoop if name == "bare" else NaiveQueue)
    return strategy_class(name)(path, synchronous)
