"""The baselines: SQLite the ways most threaded apps use it, to compare against.

They live with the benchmarks, not in the library: production configuration
never offers the slow old ways. They exist so that the benchmarks
(``python -m benchmarks.compare``, ``python -m benchmarks.load_sweep``) can
measure the approaches this project replaces; the demo app runs on them when
a benchmark passes one as its factory (``webapp.app.build_app(factory=...)``,
``python -m benchmarks.demo_app --backend retry``).

Both offer :class:`~sqlite_gateway.Gateway`'s API with no queue and no worker
(what they share is :class:`benchmarks.per_thread.PerThreadGateway`).
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

import os
import random
import time
from typing import Any

import apsw

from sqlite_gateway.arguments import Params, check_params, check_sql, lane_of
from sqlite_gateway.connection import TransactionGuard, run_sql
from sqlite_gateway.options import DEFAULT, Options, Timeout, check_seconds
from sqlite_gateway.result import Result

from .per_thread import PerThreadGateway, Writes


def _only_reads(_cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
    """An exec tracer: SQLite's word on each statement, before it steps."""
    if _cursor.is_readonly:
        return True
    raise Writes


class RetryGateway(PerThreadGateway):
    """Per-thread connections and whole-unit retries on ``BusyError``; thread-safe.

    Every call runs in the caller's thread and returns once committed.

    Args:
        path: the database file (created if missing; start() puts it in WAL mode).
        timeout: seconds a call may spend retrying (its deadline); each call
            may override it. ``timeout=None`` on a call means this default,
            not "no limit" as in Gateway: a retry loop needs a deadline.
        options, **overrides: Gateway's options (:class:`~sqlite_gateway.Options`),
            all checked. Used: ``timeout`` (None is refused), ``synchronous``,
            ``vfs``. Ignored: ``queue_size``, ``batch_max``, ``busy_timeout``
            (a retrying connection waits 0 s), ``readers``, ``read_mode``,
            ``hang_timeout``, ``background_slice``, ``autocheckpoint``, ``inline``.
        max_delay: the cap of one backoff sleep, in seconds.
        base_delay: the first backoff cap; it doubles on each attempt.

    Every call also accepts the gateway's ``priority=`` keyword and ignores
    it: the old way has no queue to order.
    """

    def __init__(self, path: str | os.PathLike[str], options: Options | None = None, *,
                 max_delay: float = 2.0, base_delay: float = 0.001, **overrides: Any) -> None:
        super().__init__(path, options, **overrides)
        self.max_delay = check_seconds("max_delay", max_delay)
        self.base_delay = check_seconds("base_delay", base_delay)

    def _backoff(self, attempt: int, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        cap = min(self.max_delay, self.base_delay * 2.0 ** min(attempt, 60))
        time.sleep(min(left, random.uniform(0, cap)))
        return True


class BusyGateway(PerThreadGateway):
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
        options, **overrides: Gateway's options (:class:`~sqlite_gateway.Options`),
            all checked. Used: ``timeout`` (None is refused), ``synchronous``,
            ``vfs``, and ``busy_timeout``: seconds a write waits for the lock
            (default 5, as Django's and Rails's; it must be > 0 here).
            Ignored: ``queue_size``, ``batch_max``, ``readers``, ``read_mode``,
            ``hang_timeout``, ``background_slice``, ``autocheckpoint``, ``inline``.

    Every call also accepts the gateway's ``priority=`` keyword and ignores it.
    """

    _BEGIN = "BEGIN IMMEDIATE"

    def __init__(self, path: str | os.PathLike[str], options: Options | None = None,
                 **overrides: Any) -> None:
        super().__init__(path, options, **overrides)
        # 0 would be RetryGateway without its retries: no wait, no second try.
        self.busy_timeout = check_seconds("busy_timeout", self.options.busy_timeout)
        self._busy_ms = int(self.busy_timeout * 1000)

    def execute(self, sql: str, params: Params = (), *, timeout: Timeout = DEFAULT,
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
        lane_of(priority)

        def read(conn: apsw.Connection, guard: TransactionGuard) -> Result:
            conn.exec_trace = _only_reads  # statements before a write only read
            try:
                return run_sql(conn, guard, sql, params)
            finally:
                conn.exec_trace = None

        return self._call(lambda conn, guard: run_sql(conn, guard, sql, params), timeout,
                          read=read)
