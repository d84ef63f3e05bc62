"""One read-only connection beside the writer (WAL), and its read.

Readers run in one of two modes, chosen by ``Gateway(read_mode=...)``:
``"inline"`` (:class:`~sqlite_gateway.readerpool.ReaderPool`, in
``sqlite_gateway/readerpool.py``: calling threads read in place, any number
of them) and ``"threads"`` (:class:`~sqlite_gateway.readerlanes.ReaderLanes`,
in ``sqlite_gateway/readerlanes.py``: reader threads fed by a queue).

Routing asks SQLite, not the SQL text: the first time a text is seen, an
exec tracer lets each statement run only if ``sqlite3_stmt_readonly`` says
it cannot write; a text SQLite judged read-only is remembered and runs
untraced from then on, and anything else goes to the writer. Connections are
opened read-only as well, so a write cannot slip through a reader even if
routing were wrong. Read-your-writes holds because each read is a fresh
statement in autocommit (a fresh WAL snapshot) that starts after the
caller's earlier answers, which came after their COMMIT.

Deadlines: SQLite calls a progress handler every ``_PROGRESS_STEPS`` (1,000)
VM steps; past the caller's deadline, or once the gateway closes, it stops the
statement (``apsw.InterruptError``), so a runaway read never outlives its
caller's patience and ``close()`` never waits for one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import apsw

from .connection import TransactionGuard, _missing_parameter, run_read, run_sql
from .errors import GatewayClosed, RequestTimeout
from .memo import TextMemo
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
        # Held while a thread uses this reader (see ReaderPool); owner: the
        # token of the thread that keeps it (None: the pool's to lend).
        self.lock = threading.Lock()
        self.owner: object | None = None
        self.running = False  # a statement runs now (close() waits for it to stop)
        # Shared by the pool: texts SQLite judged read-only (True: one statement).
        self._known = known_reads
        self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY, vfs=vfs)
        self.conn.set_busy_timeout(int(busy_timeout * 1000))
        # As on the writer, so that reading the setting here tells the truth
        # (a migration tool that reads foreign_keys=0 skips turning them off
        # before a table rebuild, and the writer's DROP TABLE then cascades).
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.guard = _ReadGuard()
        self.conn.authorizer = self.guard
        self.conn.set_progress_handler(self._should_stop, _PROGRESS_STEPS)
        if setup is not None:
            try:
                setup(self.conn)  # the connection_setup option: functions, collations...
            except BaseException:
                self.conn.close()
                raise
        # The lean read's cursor, used again and again: apsw makes a cursor per
        # Connection.execute and tracks it (about 0.4 us of a 3.6 us point read).
        self.cursor = self.conn.cursor()

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
        statements: list[str] | None = None
        self.running = True
        try:
            if known:
                result = run_read(self.conn, sql, params)
            else:
                statements = []
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
        except apsw.SQLError:
            if known is not None:
                raise
            # A text seen for the first time that this reader could not prepare:
            # its copy of the schema may predate a change the writer made
            # (SQLite re-reads it for "no such table", not for every error, e.g.
            # an upsert's ON CONFLICT target on a new index). The writer decides.
            self.passed += 1
            return None
        except apsw.InterruptError as exc:
            raise self.translate(exc, deadline, timeout, cancel, params) from None
        finally:
            self.running = False
            self.deadline = None
            self.cancel = None
        if known is None:
            assert statements is not None
            self._known.remember(sql, len(statements) == 1)
        self.served += 1
        return result

    def known_read(self, sql: str, params: Any, columns: tuple[str, ...],
                   deadline: float | None, timeout: float | None,
                   hang_limit: float | None) -> Result | None:
        """:meth:`read` for a text known to be one read-only statement that
        returns ``columns``: one ``fetchall`` on this reader's own cursor. None
        when SQLite judged it read-only, yet it writes (``PRAGMA optimize``):
        nothing was written (the connection is read-only). Raises as :meth:`read`."""
        self.deadline = hang_limit if hang_limit is not None and (
            deadline is None or hang_limit < deadline) else deadline
        self.running = True
        try:
            rows = self.cursor.execute(sql, params).fetchall()
        except BaseException as exc:
            self.renew_cursor()
            if isinstance(exc, apsw.ReadOnlyError):
                return None
            raise self.translate(exc, deadline, timeout, None, params) from None
        finally:
            self.running = False
            self.deadline = None
        self.served += 1
        return Result(tuple(rows), 0, 0, columns)

    def renew_cursor(self) -> None:
        """Replace the lean read's cursor after an error: closing it ends the
        statement (and its read transaction) an error may have left open."""
        try:
            self.cursor.close()
        except apsw.Error as exc:  # its statement's error was the caller's already
            logger.debug("closing a reader's cursor: %s: %s", type(exc).__name__, exc)
        try:
            self.cursor = self.conn.cursor()
        except apsw.Error:  # the connection is closed: this reader is not used again
            pass

    def translate(self, exc: BaseException, deadline: float | None, timeout: float | None,
                  cancel: threading.Event | None, params: Any) -> BaseException:
        """The error a caller gets for ``exc``, raised by a statement on this
        reader: an interrupt means the gateway closed, or the caller's
        deadline passed (or it gave up); a missing named parameter is named."""
        if isinstance(exc, apsw.InterruptError):
            if self.stop:
                return GatewayClosed("gateway closed while this read ran")
            if (deadline is not None and time.monotonic() >= deadline) or (
                    cancel is not None and cancel.is_set()):
                return RequestTimeout(timeout or 0.0, started=True, interrupted=True)
        if isinstance(exc, KeyError):
            return _missing_parameter(exc, params, False)
        return exc

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close()
        except apsw.Error as exc:  # closing a read-only connection: nothing to lose
            logger.debug("closing a reader: %s: %s", type(exc).__name__, exc)
