"""The writer held alone, outside any transaction, for a schema change (imports no framework).

Django's SQLite schema editor turns foreign keys off for the length of a
migration (``PRAGMA foreign_keys = OFF``), because it rebuilds tables: with
them on, dropping the old table would fire ``ON DELETE CASCADE`` on the rows
that refer to it. SQLite ignores that PRAGMA inside a transaction, and on the
gateway's writer it would turn foreign keys off for every other request too.

An :class:`ExclusiveSession` runs one ``run_exclusive`` request on the writer
that stays for the session: it turns foreign keys off, runs the statements its
owner sends one by one (on the raw connection: BEGIN, SAVEPOINT, COMMIT and DDL
included), and at the end rolls back anything left open and turns foreign keys
on again before the writer goes back to other requests. Other threads' writes
wait behind it (reads go on, on the readers, seeing the last commit).

Bounded: the session ends by itself (rolled back, foreign keys on) once it has
held the writer for ``limit`` seconds, or about a second after its owner's thread
has ended (the process is exiting, say) without closing it; its owner's next
statement then raises :class:`SessionExpired`. An owner interrupted while it waits
for a statement (Ctrl-C) ends the session as it leaves.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import apsw
import apsw.ext

from ...errors import GatewayError, RequestTimeout
from ...gateway import Gateway
from ...result import Result

__all__ = ["ExclusiveSession", "SessionExpired"]

_END = object()
_MARGIN = 2.0  # seconds the session ends before the watchdog would call the writer stuck
_LOOK = 1.0  # seconds between looks at the owner's thread while the session waits


class SessionExpired(GatewayError):
    """The session held the writer past its limit: it was rolled back and ended."""


class ExclusiveSession:
    """One thread's statements on the writer, alone, with foreign keys off.

    Made by :meth:`open`; then :meth:`execute` from the owner's thread only,
    and :meth:`close` once (from any thread; idempotent).
    """

    def __init__(self, db: Gateway, limit: float | None) -> None:
        self._db = db
        self._limit = limit
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._owner = threading.current_thread()
        self.in_transaction = False
        self._thread = threading.Thread(target=self._request, daemon=True,
                                        name="sqlite-gateway-schema-session")

    @classmethod
    def open(cls, db: Gateway, timeout: float | None) -> ExclusiveSession:
        """Wait (up to ``timeout``) until the writer is held; return the session.

        The limit is the watchdog's ``hang_timeout`` less a margin (none
        without a watchdog).

        Raises:
            RequestTimeout, GatewayClosed, Overloaded: as ``run_exclusive``.
        """
        hang = db.options.hang_timeout
        session = cls(db, None if hang is None else max(hang - _MARGIN, hang / 2))
        session._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not session._ready.wait(0.05):  # bounded: the deadline
            if session._ended.is_set():
                session.close()
                raise session._expired()
            if deadline is not None and time.monotonic() > deadline:
                session._end_soon()  # if it starts later, it ends at once
                raise RequestTimeout(timeout or 0.0, started=False)
        return session

    # -- the owner's side ---------------------------------------------------------------

    def execute(self, sql: str, params: Any = (), many: bool = False) -> Result:
        """Run one statement on the writer; its Result (every row fetched).

        Raises:
            apsw.Error: SQLite's error, unchanged.
            SessionExpired: the session passed its limit and was rolled back.
        """
        if self._ended.is_set():
            raise self._expired()
        self._jobs.put((sql, params, many))
        try:
            answer = self._answers.get()
        except BaseException:  # Ctrl-C while the statement runs: the session ends after it
            self._end_soon()
            raise
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]

    def close(self) -> None:
        """End the session: roll back what is open, foreign keys on, writer freed.

        Returns once the writer is back to other requests."""
        self._end_soon()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _end_soon(self) -> None:
        """Ask the session to end once its current statement (if any) is done."""
        if not self._closed:
            self._closed = True
            self._jobs.put(_END)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def _expired(self) -> BaseException:
        if self._error is not None or self._limit is None:
            return self._error or SessionExpired("the schema change's session has ended")
        return SessionExpired(
            f"the schema change held the writer alone for more than {self._limit:g} s and "
            "was rolled back (the limit follows the hang_timeout option: raise it in "
            "OPTIONS for long migrations, or run them while the site is stopped)")

    # -- the writer's side ----------------------------------------------------------------

    def _request(self) -> None:
        try:
            # No timeout here: the request's answer comes when the whole session ends;
            # open() bounds the wait for its start.
            self._db.run_exclusive(self._hold, timeout=None)
        except BaseException as exc:  # an error of the request itself: reported to the owner
            self._error = exc
        finally:
            self._ended.set()
            self._answers.put(self._error or self._expired())  # wakes an owner still waiting

    def _hold(self, conn: apsw.Connection) -> None:
        """The exclusive fn: serve the owner's statements until the end or the limit."""
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            self._ready.set()
            ends = None if self._limit is None else time.monotonic() + self._limit
            while True:  # bounded: the limit
                left = None if ends is None else ends - time.monotonic()
                if left is not None and left <= 0:
                    return
                try:
                    job = self._jobs.get(timeout=_LOOK if left is None else min(left, _LOOK))
                except queue.Empty:
                    if not self._owner.is_alive():
                        return  # its owner is gone (the process exits): nobody will end it
                    continue
                if job is _END:
                    return
                try:
                    self._answers.put(_run(conn, *job))
                except BaseException as exc:
                    self._answers.put(exc)
                self.in_transaction = not conn.get_autocommit()
        finally:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
            self.in_transaction = False
            conn.execute("PRAGMA foreign_keys = ON")


def _run(conn: apsw.Connection, sql: str, params: Any, many: bool) -> Result:
    cursor = conn.cursor()
    run: Callable[..., Any] = cursor.executemany if many else cursor.execute
    run(sql, params if params is not None else ())
    first = cursor.fetchone()  # a finished cursor has no description: read it before the end
    columns: tuple[str, ...] = ()
    rows: tuple[Any, ...] = ()
    if first is not None:
        columns = tuple(d[0] for d in cursor.get_description())
        rows = (first, *cursor.fetchall())
    elif not many and sql.lstrip()[:6].lower() in ("select", "pragma", "values"):
        try:
            info = apsw.ext.query_info(conn, sql)
            columns = tuple(d[0] for d in (info.description or ()))
        except apsw.Error:
            pass
    return Result(rows, conn.changes(), conn.last_insert_rowid(), columns)
