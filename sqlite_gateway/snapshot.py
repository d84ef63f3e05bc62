"""Several reads in one consistent view: ``with db.snapshot() as s:``.

A web request often runs a few queries that belong together (a page and its
comment count, an order and its lines). Through ``db.execute`` each is its
own snapshot: a write committed between two of them shows in the second and
not in the first. A :class:`Snapshot` runs them all in one read transaction
on one reader connection, so they see the database as of one moment, and pays
the routing once: the reader is taken on entering, not per statement.

::

    with db.snapshot() as s:
        page = s.execute("SELECT * FROM pages WHERE id = ?", (pid,)).rows
        n = s.execute("SELECT count(*) FROM comments WHERE page = ?", (pid,)).scalar()

Guarantees: the view is taken on entering, after every write acknowledged
to anyone before that (read-your-writes); writes committed while the
``with`` runs are not seen. Each statement has the caller's deadline and the
gateway's ``hang_timeout`` as ``execute`` has. ``close()`` stops a running
statement, and the next one raises :class:`GatewayClosed`. A text SQLite
judges a write is refused (:class:`SnapshotWriteError`), nothing run: a
snapshot only reads. WAL cannot reset past a read transaction that is still
open, so keep the ``with`` short (a request, not a session).
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import TYPE_CHECKING

import apsw

from .arguments import Params, check_params, check_sql, check_timeout
from .errors import GatewayClosed, GatewayError
from .options import DEFAULT, Timeout
from .result import Result

if TYPE_CHECKING:
    from .reader import Reader
    from .readerpool import ReaderPool

# The snapshot's own BEGIN and COMMIT run with the reader's guard off; apsw's
# statement cache is keyed by text, so a per-process nonce keeps a caller's
# "BEGIN" from ever matching them and running past the guard.
_NONCE = secrets.token_hex(8)
_BEGIN = f"BEGIN /* sqlite_gateway snapshot {_NONCE} */"
_COMMIT = f"COMMIT /* sqlite_gateway snapshot {_NONCE} */"
_FIRST_READ = f"SELECT count(*) FROM sqlite_schema /* sqlite_gateway snapshot {_NONCE} */"


class SnapshotWriteError(GatewayError):
    """A statement that writes was given to a snapshot, which only reads:
    nothing of it ran. Run writes with ``db.execute`` or ``db.transaction``."""


class Snapshot:
    """Reads in one consistent view, from the thread that entered it (see the
    module docstring). Made by :meth:`Gateway.snapshot`; not thread-safe: one
    thread uses it, inside its ``with``.

    Raises (on entering): RequestTimeout (no reader came back in time),
    GatewayClosed.
    """

    __slots__ = ("_pool", "_timeout", "_hang", "_reader", "_thread", "_done")

    def __init__(self, pool: ReaderPool, timeout: float | None,
                 hang_timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._hang = hang_timeout
        self._reader: Reader | None = None
        self._thread = 0
        self._done = False

    def __enter__(self) -> Snapshot:
        if self._reader is not None or self._done:
            raise GatewayError("a snapshot is entered once; make a new one with db.snapshot()")
        timeout = self._timeout
        reader = self._pool.acquire(None if timeout is None else time.monotonic() + timeout,
                                    timeout)
        try:
            self._own(reader, _BEGIN)
            # The view starts now (BEGIN alone defers it to the first read).
            reader.cursor.execute(_FIRST_READ).fetchall()
        except BaseException:
            if not reader.conn.get_autocommit():
                self._own(reader, _COMMIT)
            self._pool._release(reader)
            raise
        self._reader = reader
        self._thread = threading.get_ident()
        return self

    def __exit__(self, *exc_info: object) -> None:
        reader, self._reader, self._done = self._reader, None, True
        if reader is None:
            return
        try:
            if not reader.closed and not reader.conn.get_autocommit():
                self._own(reader, _COMMIT)  # a read transaction: nothing to keep or lose
        except apsw.Error:  # closing: the connection goes with the pool
            pass
        finally:
            self._pool._release(reader)

    @staticmethod
    def _own(reader: Reader, sql: str) -> None:
        guard = reader.guard
        guard.active = False
        try:
            reader.cursor.execute(sql)
        finally:
            guard.active = True

    def execute(self, sql: str, params: Params = (), *, timeout: Timeout = DEFAULT) -> Result:
        """Run one read (or several statements that read) in the snapshot.

        ``timeout``: seconds for this statement (default: the snapshot's).

        Raises:
            SnapshotWriteError: SQLite judges ``sql`` a write (nothing ran).
            GatewayError: used outside its ``with`` or from another thread.
            GatewayClosed: the gateway closed.
            RequestTimeout: the statement ran past its deadline (stopped).
            TransactionControlError, ConnectionSettingError: refused SQL.
            apsw.Error: SQLite's own error.
        """
        reader = self._reader
        if reader is None or threading.get_ident() != self._thread:
            raise GatewayError("a snapshot's execute() is for the thread inside its 'with' "
                               "block, while the block runs")
        pool = self._pool
        if pool._closed:
            raise GatewayClosed("gateway is closed")
        wait = self._timeout if timeout is DEFAULT else check_timeout(timeout)
        now = time.monotonic()
        deadline = None if wait is None else now + wait
        hang_limit = None if self._hang is None else now + self._hang
        # A text known to be one read-only statement with fixed columns (checked
        # when it was learned) runs the lean way, as db.execute runs it.
        columns = pool._columns.get(sql) if type(sql) is str and type(params) is tuple else None
        if columns is not None:
            result = reader.known_read(sql, params, columns, deadline, wait, hang_limit)
            if result is None:
                pool.forget_read(sql)
        else:
            result = pool.read_on(reader, check_sql(sql), check_params(params), deadline, wait,
                                  hang_limit)
        if result is None:
            raise SnapshotWriteError(
                "a snapshot only reads, and SQLite judges this statement a write; nothing "
                "of it ran (use db.execute or db.transaction for writes)")
        return result
