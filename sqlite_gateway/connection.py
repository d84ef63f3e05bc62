"""Opening the write connection, running statements, and the fn handle.

Nothing here starts a thread: each function runs in the thread that holds the
connection it is given. That is the write connection's holder (the worker
thread, or a caller running its request in place under the writer lock) or a
reader's (the calling thread with ``read_mode="inline"``, a reader thread with
``"threads"``). One connection is never used by two threads at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import apsw

from .arguments import Params, check_params, check_sql
from .errors import ConnectionSettingError, GatewayError, TransactionControlError
from .memo import TextMemo
from .result import Result
from .savepoint import Savepoint
from .shape import Trace, columnless, names_when_empty

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_TRANSACTION_OPS = frozenset({apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT})

# PRAGMAs a caller's SQL may not *set* through execute()/transaction() (reading
# them is fine), on the shared writer or on a reader. Everything else SQLite
# offers is per-database maintenance or a setting stored in the file
# (user_version, application_id, auto_vacuum, page_size, encoding, optimize,
# incremental_vacuum, wal_checkpoint), a one-off action (shrink_memory frees
# this connection's cache) or a read. run_exclusive(fn) gets the raw connection
# and may set any of them: maintenance owns the connection for its call.
_PROCESS_PRAGMAS = frozenset({
    # Global to the process: every SQLite connection of every library in it
    # (hard_heap_limit=65536 made every later call fail with NoMemError).
    "hard_heap_limit", "soft_heap_limit", "temp_store_directory", "data_store_directory"})
_OWNED_PRAGMAS = _PROCESS_PRAGMAS | frozenset({
    # The gateway's options and the way it opened the writer: synchronous,
    # busy_timeout, wal_autocheckpoint, WAL, foreign keys.
    "synchronous", "busy_timeout", "wal_autocheckpoint", "journal_mode", "foreign_keys",
    # Stop or void every later caller's writes, or endanger the file:
    # query_only made BEGIN fail for good; ignore_check_constraints voids the
    # CHECKs; max_page_count fills the file; writable_schema and
    # schema_version can corrupt it; locking_mode locks other processes out;
    # cell_size_check=OFF hides corruption; secure_delete=OFF keeps deleted
    # content; fullfsync/checkpoint_fullfsync weaken durability on macOS;
    # trusted_schema=ON lets the schema call unsafe functions.
    "query_only", "ignore_check_constraints", "max_page_count", "writable_schema",
    "schema_version", "locking_mode", "cell_size_check", "secure_delete", "fullfsync",
    "checkpoint_fullfsync", "trusted_schema",
    # Change the results later callers get from the same SQL: LIKE, the order
    # of unordered SELECTs, triggers firing triggers, ALTER TABLE RENAME, the
    # rows an INSERT returns (count_changes), column names, dirty reads.
    # defer_foreign_keys lasts to the COMMIT, so it would defer the checks of
    # every other request of the batch, and one violation would fail them all.
    "case_sensitive_like", "reverse_unordered_selects", "recursive_triggers",
    "legacy_alter_table", "count_changes", "full_column_names", "short_column_names",
    "empty_result_callbacks", "read_uncommitted", "defer_foreign_keys",
    # The connection's memory, threads, temp storage and query plans, for
    # every later caller (cache_size=1 or automatic_index=0 can make everyone's
    # queries slow, mmap_size turns an I/O error into a crash, temp_store
    # moves temp tables into RAM). Tune them once with run_exclusive(fn).
    "threads", "mmap_size", "cache_size", "default_cache_size", "cache_spill", "temp_store",
    "automatic_index", "analysis_limit", "journal_size_limit"})
# ATTACH/DETACH get the same refusal: an attached database stays attached for
# every later caller, and in WAL mode a transaction over several files is not
# atomic across them (run_exclusive may attach, and must detach, for its call).
_ATTACH_OPS = frozenset({apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH})

_REFUSED = (
    "explicit transaction control (BEGIN, COMMIT, ROLLBACK, END, SAVEPOINT, "
    "RELEASE) is refused: every gateway call already runs atomically in the "
    "gateway's own transaction; to make several statements commit together, "
    "put them in one function and call db.transaction(fn)"
)


class TransactionGuard:
    """An apsw authorizer that denies transaction control in callers' SQL.

    SQLite consults it while preparing each statement, so it catches every
    spelling (comments, lower case, ``END``, a ``BEGIN`` after another
    statement in the same string) with no parsing of ours. The worker's own
    BEGIN/SAVEPOINT/COMMIT are run with ``active`` False and stay in apsw's
    statement cache, which is keyed by text: each of their texts carries a
    random per-process nonce, so no caller's SQL can match one and run it past
    the guard.

    An exclusive (maintenance) fn runs with the guard inactive, because
    ``VACUUM`` passes through the authorizer as a BEGIN. ``allowed`` records
    that transaction control was prepared meanwhile: the worker then reopens
    its connection, so no such statement stays in apsw's statement cache.
    """

    __slots__ = ("active", "refused", "allowed", "refused_pragma", "own_savepoint")

    def __init__(self) -> None:
        self.active = True
        self.refused = False
        self.allowed = False
        self.refused_pragma: str | None = None
        # The worker's own savepoint (its name holds a per-process random
        # nonce no caller can know): allowed with the guard active, so the
        # savepoint around each request costs no guard switching. Names that
        # start with it are the gateway's too (conn.savepoint(): own + depth).
        self.own_savepoint: str | None = None

    def __call__(self, op: int, p1: str | None, p2: str | None,
                 db: str | None, trigger: str | None) -> int:
        if self.active and ((op == apsw.SQLITE_PRAGMA and p2 is not None
                             and (p1 or "").lower() in _OWNED_PRAGMAS) or op in _ATTACH_OPS):
            self.refused_pragma = "ATTACH" if op in _ATTACH_OPS else (p1 or "").lower()
            return apsw.SQLITE_DENY
        if op in _TRANSACTION_OPS:
            if self.active:
                own = self.own_savepoint
                if (op == apsw.SQLITE_SAVEPOINT and p2 is not None and own is not None
                        and p2.startswith(own)):
                    return apsw.SQLITE_OK  # the worker's, or a conn.savepoint() (own + depth)
                self.refused = True
                return apsw.SQLITE_DENY
            self.allowed = True
        return apsw.SQLITE_OK


def open_write_connection(path: str, *, synchronous: str, busy_timeout: float,
                          vfs: str | None = None, autocheckpoint: int = 1000,
                          setup: Callable[[apsw.Connection], object] | None = None) -> tuple[
        apsw.Connection, TransactionGuard]:
    """Open and configure the one write connection (call on the worker thread).

    ``vfs`` names a registered SQLite VFS (None: the default one).
    ``autocheckpoint`` is SQLite's ``wal_autocheckpoint`` in pages (0: never
    checkpoint after a commit; beside Litestream, which checkpoints itself).
    ``setup`` (the connection_setup option) is called last, with the guard on; if it raises,
    the connection is closed and its error raised.
    """
    try:
        conn = apsw.Connection(path, vfs=vfs)
    except apsw.CantOpenError as exc:
        raise _cant_open(path, exc) from None
    try:
        # No SQL may corrupt the file on purpose (e.g. writes to an FTS5 index's
        # shadow tables): SQLite's SQLITE_DBCONFIG_DEFENSIVE.
        conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        # Set first, so that switching to WAL also waits for an outside lock.
        conn.set_busy_timeout(int(busy_timeout * 1000))
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        except apsw.CantOpenError as exc:  # the -wal file cannot be created
            raise _cant_open(path, exc) from None
        if str(mode).lower() != "wal":
            raise GatewayError(f"could not put {path!r} in WAL mode (journal_mode is {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # validated against SYNCHRONOUS
        conn.execute("PRAGMA foreign_keys=ON")
        conn.wal_autocheckpoint(autocheckpoint)
        guard = TransactionGuard()
        conn.authorizer = guard
        if setup is not None:
            setup(conn)
    except BaseException:
        conn.close()
        raise
    return conn, guard


def _cant_open(path: str, exc: apsw.CantOpenError) -> apsw.CantOpenError:
    """SQLite's "unable to open database file", with the path and the likely reason.

    Same class and result codes: code that catches ``apsw.CantOpenError`` still does.
    """
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        reason = f"its folder {folder} does not exist (create it first)"
    elif os.path.isdir(full):
        reason = "it is a folder, not a file"
    elif not os.access(folder, os.W_OK | os.X_OK):
        reason = (f"no permission to write in its folder {folder} (SQLite creates the "
                  "-wal and -shm files beside the database)")
    elif os.path.exists(full) and not os.access(full, os.R_OK | os.W_OK):
        reason = "no permission to read and write it"
    else:
        reason = "see the error code"
    better = apsw.CantOpenError(f"{exc}: {path!r}: {reason}")
    for name in ("result", "extendedresult", "error_offset"):
        if hasattr(exc, name):
            setattr(better, name, getattr(exc, name))
    return better


def run_sql(conn: apsw.Connection, guard: TransactionGuard, sql: str,
            params: Any, many: bool = False,
            statements: list[str] | None = None) -> Result:
    """Run caller SQL to completion and copy its rows out.

    Every row is fetched here: apsw cursors are lazy, and in a string of
    several statements the later ones run only as the cursor is consumed.
    ``statements``, when given, receives each statement's text as it
    begins (an exec tracer): pass it for a text that may hold several, so
    that the result keeps the rows and columns of the last statement that
    returned rows (see :func:`read_rows`); without it the text must be one
    statement (the caller learned that before). The Result's columns and
    rowcount are as :mod:`~sqlite_gateway.shape` says.

    Raises:
        TransactionControlError: the SQL holds BEGIN/COMMIT/SAVEPOINT/...
        ConnectionSettingError: a PRAGMA sets what the gateway owns.
        KeyError: a named parameter has no value in ``params`` (named in the message).
        apsw.Error: whatever SQLite raised, unchanged.
    """
    before = conn.total_changes()
    cursor = None
    trace = None
    columns: tuple[str, ...]
    rows: tuple[Any, ...]
    try:
        if statements is None and not many:
            cursor = conn.execute(sql, params)
        else:
            # Several statements, or executemany: each one's own changes() is
            # counted as the next begins (see shape.py). (A tracer set on the
            # connection still runs: a cursor's would replace it.)
            cursor = conn.cursor()
            trace = Trace(conn, before, conn.exec_trace, statements)
            cursor.exec_trace = trace
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
        if statements is not None and not many:
            rows, columns = read_rows(cursor, statements)
        else:
            # The first row, if any, before the description: asking a finished
            # cursor for its description raises, and an exception costs more than
            # the statement itself (an INSERT has no rows, so no description).
            first = cursor.fetchone()
            if first is None:
                columns, rows = (), ()
            else:
                columns = tuple([d[0] for d in cursor.get_description()])
                rest = cursor.fetchall()
                rows = (first, *rest) if rest else (first,)
    except BaseException as exc:
        if cursor is not None:
            cursor.close()  # reset its statement now, not when the exception is freed
        if isinstance(exc, KeyError):
            raise _missing_parameter(exc, params, many) from None
        if not isinstance(exc, apsw.AuthError):
            raise
        refused, pragma = guard.refused, guard.refused_pragma
        guard.refused, guard.refused_pragma = False, None
        if refused:
            raise TransactionControlError(_REFUSED) from None
        if pragma is not None:
            raise ConnectionSettingError(_setting_refused(pragma)) from None
        raise
    # (A cursor read to its end has reset its statement: no close() needed.)
    # No row: the names all the same, unless the text is known to have none
    # (names_when_empty's own first test, here: most writes end so).
    if not rows and sql not in columnless:
        columns = names_when_empty(conn, sql, params[0] if many and params else params)
    if trace is None:
        # One statement: its own changes() (not its triggers'), if it changed anything.
        rowcount = conn.changes() if conn.total_changes() != before else 0
    else:
        rowcount = trace.finish()
    return Result(rows, rowcount, conn.last_insert_rowid(), columns)


def _recorder(statements: list[str],
              then: Callable[[apsw.Cursor, str, Any], bool] | None = None,
              ) -> Callable[[apsw.Cursor, str, Any], bool]:
    """An exec tracer that appends each statement to ``statements`` as it
    begins, once ``then`` (if given) lets it run."""
    def record(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        if then is not None and not then(cursor, statement, bindings):
            return False
        statements.append(statement)
        return True
    return record


def read_rows(cursor: apsw.Cursor, statements: list[str]) -> tuple[
        tuple[tuple[Any, ...], ...], tuple[str, ...]]:
    """Fetch every row of a text that may hold several statements; return the
    rows and columns of the last statement that returned rows.

    Statements of one text may return different columns (``SELECT 1 AS a;
    SELECT 2 AS b, 3 AS c``): rows of several under one set of names would
    be mislabelled, so only the last result is kept, as a DB-API cursor
    keeps its latest result set. ``statements`` grows (by the exec tracer)
    as each statement begins, which marks where one result ends.
    """
    rows: list[tuple[Any, ...]] = []
    columns: tuple[str, ...] = ()
    seen = -1
    for row in cursor:
        if len(statements) != seen:  # the first row of a statement
            seen = len(statements)
            rows = []
            columns = tuple([d[0] for d in cursor.get_description()])
        rows.append(row)
    return tuple(rows), columns


def _missing_parameter(exc: KeyError, params: Any, many: bool) -> KeyError:
    """apsw's bare ``KeyError('name')`` for a named parameter missing from a
    mapping, as a KeyError that says what to change."""
    name = exc.args[0] if exc.args else "?"
    given = params[0] if many and isinstance(params, Sequence) and params else params
    keys = ", ".join(map(repr, given)) if isinstance(given, Mapping) else "none"
    return KeyError(f"the SQL names the parameter :{name}, but params has no value for "
                    f"{name!r} (its keys: {keys}); add it, or correct the name")


def _setting_refused(name: str) -> str:
    if name == "ATTACH":
        return ("ATTACH and DETACH are refused: an attached database would stay attached "
                "for every later caller of the shared connection, and a transaction over "
                "several files in WAL mode is not atomic across them (to copy from another "
                "file, attach and detach it inside db.run_exclusive(fn))")
    if name in _PROCESS_PRAGMAS:
        return (f"PRAGMA {name} = ... is refused: it would change every SQLite connection "
                "in this process, not only the gateway's")
    return (f"PRAGMA {name} = ... is refused: it would change the shared connection for "
            "every later caller (set synchronous, busy_timeout and the like as Gateway "
            "options; tune the rest once with db.run_exclusive(fn))")


def run_read(conn: apsw.Connection, sql: str, params: Any,
             statements: list[str] | None = None,
             tracer: Callable[[apsw.Cursor, str, Any], bool] | None = None) -> Result:
    """:func:`run_sql` for a read-only connection: nothing changes there, so
    no change counts are read (rowcount and lastrowid are 0). ``statements``
    as in :func:`run_sql`; ``tracer`` may refuse a statement before it runs
    (apsw then raises ``ExecTraceAbort``). Errors are raised as they are
    (the caller interprets an ``AuthError``), except a missing named
    parameter, named as in :func:`run_sql`."""
    cursor = None
    try:
        if statements is None:
            cursor = conn.execute(sql, params)
            first = cursor.fetchone()
            if first is None:
                return Result((), 0, 0, names_when_empty(conn, sql, params))
            columns = tuple([d[0] for d in cursor.get_description()])
            rest = cursor.fetchall()
            return Result((first, *rest) if rest else (first,), 0, 0, columns)
        cursor = conn.cursor()
        cursor.exec_trace = _recorder(statements, tracer)
        cursor.execute(sql, params)
        rows, columns = read_rows(cursor, statements)
        if not rows:
            columns = names_when_empty(conn, sql, params)
        return Result(rows, 0, 0, columns)
    except BaseException as exc:
        if cursor is not None:
            cursor.close()
        if isinstance(exc, KeyError):
            raise _missing_parameter(exc, params, False) from None
        raise


class Connection:
    """The handle a transaction fn receives as its first argument.

    Exported as ``sqlite_gateway.Connection`` so that app code can be typed
    (``def add_bet(conn: Connection, ...) -> int``). It runs statements
    inside that fn's savepoint, on the writer, and returns the same
    :class:`Result` as the gateway. It is valid only while the fn runs, in
    the fn's own thread; transaction control and shared-connection PRAGMAs
    are refused as in ``Gateway.execute``. Apps never make one.
    (``run_exclusive(fn)`` gives fn the raw ``apsw.Connection`` instead.)
    """

    __slots__ = ("_conn", "_guard", "_open", "_singles", "_savepoints")

    def __init__(self, conn: apsw.Connection, guard: TransactionGuard,
                 singles: TextMemo[bool] | None = None) -> None:
        self._conn = conn
        self._guard = guard
        self._open = True
        self._savepoints: list[Savepoint] | None = None  # open ones, innermost last
        # The writer's memo of texts known to be one statement: any other
        # text runs traced (and is learned), so a multi-statement one keeps
        # the columns of the rows it returns (see read_rows).
        self._singles = singles

    def _check_open(self) -> apsw.Connection:
        if not self._open:
            raise GatewayError("this conn handle was used after its transaction fn returned; "
                               "it is valid only inside that call")
        conn = self._conn
        if conn.get_autocommit():
            # A statement of this fn (OR ROLLBACK, a trigger's RAISE(ROLLBACK))
            # ended the whole transaction: anything run now would commit on its
            # own, outside the fn's atomic unit.
            raise GatewayError("the transaction was rolled back as a whole (INSERT OR "
                               "ROLLBACK or RAISE(ROLLBACK)); nothing more can run in this "
                               "transaction fn")
        return conn

    def execute(self, sql: str, params: Params = ()) -> Result:
        """Run ``sql`` (one or more statements) inside the fn's transaction.

        Raises:
            apsw.Error: SQLite's own error (the fn may catch it and go on;
                SQLite has undone that statement).
            TransactionControlError, ConnectionSettingError: refused SQL.
            GatewayError: the handle is used after its fn returned, or the
                whole transaction was already rolled back.
            TypeError, ValueError: ``sql`` or ``params`` of the wrong kind.
        """
        conn = self._conn
        if not self._open or conn.get_autocommit():
            conn = self._check_open()  # raises the right error
        if type(sql) is not str or not sql or (sql[0].isspace() and sql.isspace()):
            sql = check_sql(sql)
        if type(params) is not tuple:
            params = check_params(params)
        singles = self._singles
        if singles is None or singles.map.get(sql):
            return run_sql(conn, self._guard, sql, params)
        statements: list[str] = []
        result = run_sql(conn, self._guard, sql, params, statements=statements)
        singles.remember(sql, len(statements) == 1)
        return result

    def executemany(self, sql: str, seq_of_params: Sequence[Params]) -> Result:
        """Run one statement once per parameter set, inside the fn's transaction."""
        conn = self._check_open()
        return run_sql(conn, self._guard, check_sql(sql),
                       [check_params(p) for p in seq_of_params], many=True)

    def savepoint(self) -> Savepoint:
        """A nested unit for ``with``: its writes roll back alone if its body raises.

        ::

            def place(conn, bets):
                for bet in bets:
                    try:
                        with conn.savepoint():
                            conn.execute("INSERT INTO bets VALUES (?, ?)", bet)
                            conn.execute("UPDATE wallets SET ...", ...)
                    except apsw.ConstraintError:
                        pass  # this bet's rows are undone; the others go on

        The exception leaves the ``with`` (catch it to go on); a body that
        ends normally keeps its writes, which commit with the fn. Nests to
        any depth, innermost first; valid only while the fn runs. See
        :class:`~sqlite_gateway.savepoint.Savepoint`.
        """
        self._check_open()
        return Savepoint(self)

    @property
    def in_transaction(self) -> bool:
        """True while the fn's transaction is open (False once a statement
        rolled it back as a whole)."""
        if not self._open:
            raise GatewayError("this conn handle was used after its transaction fn returned")
        return bool(self._conn.in_transaction)

    def close(self) -> None:
        """Invalidate the handle (called by the worker when the fn returns)."""
        self._open = False
