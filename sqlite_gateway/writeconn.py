"""The write connection and what the gateway installs on it.

:class:`WriteConn` holds the one apsw connection that writes, with its guard
(the authorizer that refuses transaction control), the worker's own statement
texts, the memo of single-statement texts, and the deadline of a caller that
runs its request in place. It opens, arms, reopens and closes the connection;
the :class:`~sqlite_gateway.worker.Worker` (the thread) and the
:class:`~sqlite_gateway.batch.Batches` (what runs between BEGIN and the
answers) both use it. Only the thread holding the worker's writer lock touches
it, so nothing here takes a lock.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

import apsw

from .connection import TransactionGuard, open_write_connection
from .memo import TextMemo

logger = logging.getLogger("sqlite_gateway.worker")

_REOPEN_DELAYS = (0.0, 0.1, 1.0)  # seconds before each attempt to reopen; then the worker dies
_PROGRESS_STEPS = 1000  # SQLite VM steps between two looks at an in-place caller's deadline
# Seconds between two tries for a lock another process holds: SQLite's own
# busy-timeout schedule (sqliteDefaultBusyCallback).
_BUSY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)


class WriteConn:
    """The worker's write connection (``conn``, None until :meth:`open`).

    Not thread-safe by design: only the thread that holds the worker's
    writer lock uses it (the worker, or a caller running in place).
    ``deadline`` is that in-place caller's deadline (monotonic), read by the
    progress and busy handlers; ``suspect`` is set after an I/O error, so the
    worker reopens after its turn.
    """

    def __init__(self, path: str, *, synchronous: str, busy_timeout: float,
                 vfs: str | None = None, autocheckpoint: int = 1000,
                 setup: Callable[[apsw.Connection], object] | None = None) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.vfs = vfs
        self.autocheckpoint = autocheckpoint
        self.setup = setup  # the connection_setup option
        self.conn: apsw.Connection | None = None
        self.guard = TransactionGuard()
        self.deadline: float | None = None
        self.suspect = False  # an I/O error was seen: reopen after this turn
        self._busy_since = 0.0  # when the current wait for a lock began
        # The worker's own statements are prepared past the guard and kept in
        # apsw's statement cache, which is keyed by text. A per-process nonce
        # in each text means no caller's SQL can ever match a cached one.
        nonce = secrets.token_hex(8)
        savepoint = self.savepoint = f"sqlite_gateway_{nonce}"
        self.sql = {
            "begin": f"BEGIN IMMEDIATE /* sqlite_gateway {nonce} */",
            "commit": f"COMMIT /* sqlite_gateway {nonce} */",
            "rollback": f"ROLLBACK /* sqlite_gateway {nonce} */",
            "savepoint": f"SAVEPOINT {savepoint}",
            "release": f"RELEASE {savepoint}",
            "rollback_to": f"ROLLBACK TO {savepoint}",
        }
        # SQL text -> True when it holds exactly one statement (learned on its
        # first successful run). One statement is atomic by itself, so it
        # needs no savepoint of its own, and its rows need no statement
        # boundaries. Bounded in entries and bytes; single is its plain dict.
        self.singles: TextMemo[bool] = TextMemo()
        self.single = self.singles.map

    def open(self) -> None:
        """Open and configure the connection (WAL, synchronous...), then :meth:`arm` it.

        Raises:
            apsw.Error: the file could not be opened or configured.
        """
        self.conn, self.guard = open_write_connection(
            self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout,
            vfs=self.vfs, autocheckpoint=self.autocheckpoint, setup=self.setup)
        self.guard.own_savepoint = self.savepoint
        self.arm()

    def arm(self) -> None:
        """Install what the gateway owns on its connection (again after an
        exclusive fn, which gets the raw connection and may have changed it).

        - the guard (the authorizer that refuses transaction control;
          setting it makes SQLite expire every prepared statement, so none
          prepared without it runs again unchecked), and no connection-wide
          tracers (a row tracer would rewrite every later caller's rows);
        - a progress handler: a request run in its caller's thread has no
          other thread to stop it at its deadline, so SQLite asks this every
          _PROGRESS_STEPS VM steps;
        - a busy handler that waits for another process's lock up to
          ``busy_timeout``, as SQLite's own does, but no longer than that
          in-place caller's deadline.
        """
        conn = self.conn
        assert conn is not None
        conn.authorizer = self.guard
        conn.exec_trace = conn.row_trace = None
        conn.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
        conn.set_busy_handler(self._busy)

    def _past_deadline(self) -> bool:
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

    def _busy(self, tries: int) -> bool:
        """SQLite's busy handler: True to try the lock again after a short sleep."""
        now = time.monotonic()
        if tries == 0:
            self._busy_since = now
        limit = self._busy_since + self.busy_timeout
        deadline = self.deadline
        if deadline is not None and deadline < limit:
            limit = deadline
        if now >= limit:
            return False
        time.sleep(min(_BUSY_DELAYS[min(tries, len(_BUSY_DELAYS) - 1)], limit - now))
        return True

    def exec(self, sql: str) -> None:
        """Run one of the worker's own statements (``sql`` texts), past the guard."""
        assert self.conn is not None
        self.guard.active = False
        try:
            self.conn.execute(sql)
        finally:
            self.guard.active = True

    def close(self) -> None:
        """Close the connection (SQLite rolls back an open transaction)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.close()
        except apsw.Error as exc:
            # The checkpoint SQLite runs on close failed (an I/O error); the
            # connection is closed all the same, and the WAL keeps the commits.
            logger.warning("closing the write connection to %s: %s: %s",
                           self.path, type(exc).__name__, exc)
            conn.close(True)

    def reopen(self, cause: str, level: int = logging.WARNING) -> None:
        """Replace the connection after an I/O error or a failed ROLLBACK.

        Closing drops a half-done transaction; the new connection reads the
        file afresh (in WAL mode, frames that no commit covers are ignored),
        so no page cached before the fault is trusted. Per-connection settings
        made in ``run_exclusive`` (``PRAGMA max_page_count``...) are lost.

        Raises:
            apsw.Error: every attempt failed; the worker then dies.
        """
        logger.log(level, "worker on %s: reopening its connection after %s", self.path, cause)
        self.close()
        error: apsw.Error | None = None
        for delay in _REOPEN_DELAYS:
            time.sleep(delay)
            try:
                self.open()
                return
            except apsw.Error as exc:
                logger.warning("worker on %s: reopening failed: %s: %s",
                               self.path, type(exc).__name__, exc)
                error = exc
        assert error is not None
        raise error
