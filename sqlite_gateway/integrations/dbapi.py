"""A DB-API 2.0 (PEP 249) module over the gateway, shaped like ``sqlite3``.

For ORMs and drivers written against the ``sqlite3`` module: SQLAlchemy's
``sqlite+gateway`` dialect imports this module as its DB-API. Every
:func:`connect` to one file in a process shares one started
:class:`~sqlite_gateway.Gateway` (see :mod:`~sqlite_gateway.integrations.registry`),
so their writes share one writer and group commit.

Where a statement runs (decided per statement, in the calling thread):

- inside a transaction fn run by :func:`bound_to` (the ORM helpers): on the
  fn's handle, so it commits with the fn;
- inside an open transaction: on the connection's **write block**
  (``Gateway.writer()``), which holds the writer until ``commit()`` or
  ``rollback()`` and commits with the batch it joins;
- otherwise reads go to the gateway's readers, and in autocommit mode each
  write is one gateway call, committed when it returns.

Transactions, as ``sqlite3`` in its default (legacy) mode:

- ``isolation_level=""`` or ``"DEFERRED"`` (the default): the write block
  starts at the first statement that writes (as SQLite judges it), so a
  transaction that only reads never holds the writer; its reads before the
  first write each see the latest commit.
- ``"IMMEDIATE"`` or ``"EXCLUSIVE"``, or ``begin="immediate"``: the block
  starts at the transaction's first statement, so a read-modify-write is
  exact (no other writer can come between the read and the write).
- ``None``: autocommit; ``BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE]``,
  ``COMMIT``/``END``, ``ROLLBACK``, ``SAVEPOINT x``, ``RELEASE [SAVEPOINT] x``
  and ``ROLLBACK TO [SAVEPOINT] x`` sent as statements (as peewee and Django
  do) open, end and nest the write block (see
  :mod:`~sqlite_gateway.integrations.txcontrol`). Any other transaction
  control is refused by the gateway.

Errors: SQLite's errors arrive as this module's PEP 249 classes, mapped as
``sqlite3`` maps them (a constraint violation is an :class:`IntegrityError`),
with the apsw error as ``__cause__`` and ``sqlite_errorcode``/``sqlite_errorname``
set; the gateway's own errors (``Overloaded``, ``RequestTimeout``,
``GatewayClosed``, ``NestedCallError``...) are raised unchanged, so web
integrations still map them to 503/504.

Not carried over from ``sqlite3``: ``:memory:`` (the gateway needs a file);
``detect_types`` converters (results come back as SQLite stores them;
SQLAlchemy parses dates itself); functions, aggregates and collations
registered per connection (the gateway's connections are shared: pass the
gateway's ``connection_setup`` option instead; ``regexp`` and ``floor`` are
registered on every connection of a gateway opened here). ``datetime.datetime`` and
``datetime.date`` parameters bind as ISO text, as ``sqlite3``'s default
adapters do, and :func:`register_adapter` adds more.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import apsw

from ..arguments import check_timeout
from ..gateway import Gateway
from ..lifecycle import State
from ..options import DEFAULT, Timeout
from ..result import Result
from .dbapi_cursor import Cursor
from .dbapi_errors import (DatabaseError, DataError, Error, IntegrityError, InterfaceError,
                           InternalError, NotSupportedError, OperationalError, ProgrammingError,
                           Warning, mapped)
from .registry import open_gateway
from .txcontrol import Block, TxStatement, parse

__all__ = [
    "apilevel", "threadsafety", "paramstyle", "sqlite_version", "sqlite_version_info",
    "connect", "Connection", "Cursor", "bound_to", "register_adapter", "register_converter",
    "converters",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "Binary", "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks",
    "TimestampFromTicks", "PARSE_DECLTYPES", "PARSE_COLNAMES",
]

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not a connection at the same time
paramstyle = "qmark"  # named (``:name`` with a mapping) is accepted too
sqlite_version = apsw.sqlite_lib_version()
sqlite_version_info = tuple(int(part) for part in sqlite_version.split("."))
PARSE_DECLTYPES, PARSE_COLNAMES = 1, 2  # for code that reads them; detect_types is refused

Binary = bytes
Date, Time, Timestamp = datetime.date, datetime.time, datetime.datetime


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 (PEP 249's name)
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802
    return Timestamp(*time.localtime(ticks)[:6])


# sqlite3's default adapters (ISO text), and any added by register_adapter.
_adapters: dict[type, Callable[[Any], Any]] = {
    datetime.datetime: lambda value: value.isoformat(" "),
    datetime.date: lambda value: value.isoformat(),
}


def register_adapter(type_: type, adapter: Callable[[Any], Any]) -> None:
    """Bind values of exactly ``type_`` as ``adapter(value)`` (as ``sqlite3``'s
    function of that name). Process-wide; register at import time."""
    _adapters[type_] = adapter


converters: dict[str, Callable[[bytes], Any]] = {}
"""What :func:`register_converter` registered, by upper-case type name (as
``sqlite3.converters``). Kept for code that registers converters at import
time (Django's backend does); they are not applied: ``detect_types`` is
refused, because the gateway's results carry column names, not declared types."""


def register_converter(typename: str, converter: Callable[[bytes], Any]) -> None:
    """Record a converter as ``sqlite3.register_converter`` does (see :data:`converters`:
    it is never applied here)."""
    converters[typename.upper()] = converter


def _adapt(params: Any) -> Any:
    """``params`` with the adapted types converted; the same object when none is."""
    if params is None:
        return ()
    adapters = _adapters
    if isinstance(params, Mapping):
        if any(type(v) in adapters for v in params.values()):
            return {k: adapters[type(v)](v) if type(v) in adapters else v
                    for k, v in params.items()}
        return params
    if isinstance(params, (tuple, list)) and any(type(v) in adapters for v in params):
        return tuple(adapters[type(v)](v) if type(v) in adapters else v for v in params)
    return params


_local = threading.local()


@contextmanager
def bound_to(gateway: Gateway, conn: Any) -> Iterator[None]:
    """While the block runs, every connection of this module on ``gateway``
    used in this thread runs its statements on ``conn``, a transaction fn's
    handle, so they commit with the fn. A connection's own transaction
    becomes a savepoint on ``conn`` (its rollback undoes only its part).

    Call it inside the fn (``db.transaction(fn)``), around the ORM code.
    """
    bound: dict[int, Any] = _local.__dict__.setdefault("bound", {})
    key = id(gateway)
    previous = bound.get(key)
    bound[key] = conn
    try:
        yield
    finally:
        if previous is None:
            del bound[key]
        else:
            bound[key] = previous


def _bound_conn(gateway: Gateway) -> Any:
    bound = _local.__dict__.get("bound")
    return bound.get(id(gateway)) if bound else None


_EMPTY = Result()
_ISOLATION_LEVELS = {"": None, "DEFERRED": "deferred", "IMMEDIATE": "immediate",
                     "EXCLUSIVE": "immediate"}
_BEGIN_MODES = ("deferred", "immediate")


def _check_level(value: object) -> None:
    if value is not None and (not isinstance(value, str)
                              or value.upper() not in _ISOLATION_LEVELS):
        raise ValueError("isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or "
                         f"'EXCLUSIVE', or None (autocommit), not {value!r}")


def connect(database: str | os.PathLike[str] | None = None, timeout: Timeout = DEFAULT,
            detect_types: int = 0, isolation_level: str | None = "",
            check_same_thread: bool = True, factory: Any = None,
            cached_statements: int = 128, uri: bool = False, *,
            begin: str = "deferred", gateway: Gateway | None = None,
            **options: Any) -> Connection:
    """Open a connection to ``database`` through its process-wide gateway.

    The positional parameters are ``sqlite3.connect``'s. ``timeout`` is how
    long each call waits for its answer (default: the gateway's ``timeout``
    option). ``check_same_thread`` and ``cached_statements`` are accepted and
    ignored (the gateway owns its connections and their caches).

    Args:
        begin: ``"deferred"`` (the write block starts at the first write) or
            ``"immediate"`` (at the transaction's first statement); the mode
            of ``isolation_level=""``.
        gateway: an existing started Gateway to use instead of opening one
            by path (``database`` is then ignored).
        **options: gateway options (``readers=8``, ``synchronous="NORMAL"``,
            text values parsed); used when this call opens the gateway, and
            checked against the running one otherwise. ``connection_setup``
            (functions, collations for every SQLite connection the gateway
            opens) runs after ``regexp`` and ``floor`` are registered.

    Raises:
        NotSupportedError: ``:memory:``, ``uri=True``, ``detect_types``, ``factory``.
        ValueError, TypeError: a bad option, isolation level or begin mode.
        OperationalError: the file could not be opened.
    """
    del check_same_thread, cached_statements
    if detect_types:
        raise NotSupportedError(
            "detect_types is not supported: results come back as SQLite stores them and "
            "registered converters are not applied (convert in the application or the "
            "ORM's column types)")
    if factory is not None:
        raise NotSupportedError("factory= is not supported by sqlite_gateway's DB-API")
    if uri:
        raise NotSupportedError("uri=True is not supported: pass a plain file path (the "
                                "gateway opens its connections in the modes it needs)")
    return Connection(database, timeout, isolation_level, begin, gateway, options)


class Connection:
    """A DB-API connection: a view of one gateway with its own transaction.

    Cheap to make (no SQLite connection of its own). Use it from one thread
    at a time (``threadsafety = 1``); an ORM's pool passes it between
    threads between transactions. A transaction's write block belongs to the
    thread that opened it. End every transaction (``commit``, ``rollback`` or
    ``close``): one left open holds the writer until the gateway's
    ``hold_limit`` rolls it back (SQLAlchemy's pool rolls back a connection
    whose session was dropped).
    """

    def __init__(self, database: str | os.PathLike[str] | None, timeout: Timeout,
                 isolation_level: str | None, begin: str, gateway: Gateway | None,
                 options: dict[str, Any]) -> None:
        # Every argument is checked before the gateway is opened.
        if begin not in _BEGIN_MODES:
            raise ValueError(f"begin must be 'deferred' or 'immediate', not {begin!r}")
        _check_level(isolation_level)
        self._begin = begin
        self._closed = False
        self._block: Block | None = None
        self._explicit: str | None = None  # the mode of an open BEGIN statement
        self._savepoint_tx = False  # autocommit transaction opened by SAVEPOINT
        self._timeout = timeout if timeout is DEFAULT else check_timeout(timeout)
        self._options = options
        if gateway is not None:
            if not isinstance(gateway, Gateway):
                raise TypeError(f"gateway must be a Gateway, not {type(gateway).__name__}")
            self._owned, self._path, self._db = False, gateway.path, gateway
        else:
            if database is None:
                raise NotSupportedError(
                    "no database file: pass a path (sqlite+gateway:///app.db) or an open "
                    "Gateway (connect(gateway=db))")
            self._owned, self._path = True, os.fspath(database)
            if self._path in ("", ":memory:"):
                raise NotSupportedError(
                    f"{self._path!r} is not supported: the gateway shares its connections "
                    "and needs WAL, which needs a database file")
            try:
                self._db = open_gateway(self._path, options)
            except apsw.Error as exc:
                raise mapped(exc) from exc
        self._pid = os.getpid()
        self._level: str | None = ""
        self._mode = begin  # the current implicit transactions' begin mode
        self.isolation_level = isolation_level
        self.row_factory = None
        self.text_factory = str

    # -- sqlite3's attributes -------------------------------------------------

    @property
    def isolation_level(self) -> str | None:
        """None: autocommit; ``""``/``"DEFERRED"``/``"IMMEDIATE"``/``"EXCLUSIVE"``:
        implicit transactions (``""`` takes the connection's ``begin`` mode)."""
        return self._level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        _check_level(value)
        if value is not None:
            self._mode = _ISOLATION_LEVELS[value.upper()] or self._begin
        elif self._block is not None and self._explicit is None:
            self.commit()  # sqlite3 commits a pending transaction when autocommit is set
        self._level = value

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open (a write block, or a BEGIN statement's)."""
        return self._block is not None or self._explicit is not None

    @property
    def gateway(self) -> Gateway:
        """The gateway this connection runs on."""
        return self._gateway()

    # -- DB-API ---------------------------------------------------------------

    def cursor(self, factory: Any = None) -> Cursor:
        self._check_open()
        return Cursor(self) if factory is None else factory(self)

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, script: str) -> Cursor:
        return self.cursor().executescript(script)

    def commit(self) -> None:
        """Commit the open transaction (returns once committed); no-op without one."""
        self._check_open()
        block, self._block = self._block, None
        self._explicit, self._savepoint_tx = None, False
        if block is not None:
            try:
                block.commit()
            except apsw.Error as exc:
                raise mapped(exc) from exc

    def rollback(self) -> None:
        """Undo the open transaction; no-op without one."""
        self._check_open()
        block, self._block = self._block, None
        self._explicit, self._savepoint_tx = None, False
        if block is not None:
            try:
                block.rollback()
            except apsw.Error as exc:
                raise mapped(exc) from exc

    def close(self) -> None:
        """Roll back an open transaction and close; idempotent. The shared
        gateway stays open for the process's other connections."""
        if self._closed:
            return
        try:
            self.rollback()
        finally:
            self._closed = True

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """As sqlite3: commit on success, roll back on an exception; stays open."""
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def create_function(self, name: str, narg: int, func: Any, *,
                        deterministic: bool = False) -> None:
        """Refused, except ``regexp``/``floor`` (already registered): the
        gateway's SQLite connections are shared by every connection of the
        process, so functions are registered once for all of them."""
        if name.lower() in ("regexp", "floor"):
            return
        raise NotSupportedError(
            f"create_function({name!r}) is not supported per connection: the gateway's "
            "connections are shared; register functions with the gateway's connection "
            "connection_setup option (connect(connection_setup=fn), or in SQLAlchemy "
            "connect_args={'connection_setup': fn})")

    create_aggregate = create_collation = create_window_function = create_function

    # -- running statements ---------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed database.")

    def _gateway(self) -> Gateway:
        db = self._db
        if self._pid != os.getpid() or (self._owned and db.state is not State.RUNNING):
            if self._pid != os.getpid():  # forked: the parent's block is not ours
                self._block, self._explicit, self._pid = None, None, os.getpid()
            if self._owned:
                db = self._db = open_gateway(self._path, self._options)
        return db

    def _wait(self, db: Gateway) -> float | None:
        return db.timeout if self._timeout is DEFAULT else self._timeout

    def _run(self, sql: str, params: Any, many: bool) -> tuple[Result, bool]:
        """Run one call; (its Result, whether it ran as a transaction statement)."""
        self._check_open()
        if not isinstance(sql, str):
            raise ProgrammingError(f"sql must be a str, not {type(sql).__name__}")
        try:
            if not many:
                tx = parse(sql)
                if tx is not None:
                    self._transaction_statement(tx)
                    return _EMPTY, True
                return self._statement(sql, _adapt(params), False), False
            return self._statement(sql, [_adapt(p) for p in params], True), False
        except apsw.Error as exc:
            raise mapped(exc) from exc

    def _statement(self, sql: str, params: Any, many: bool) -> Result:
        db = self._gateway()
        block = self._block
        if block is None:
            fn_conn = _bound_conn(db)
            autocommit = self._level is None and self._explicit is None
            if fn_conn is not None and autocommit:
                return fn_conn.executemany(sql, params) if many else fn_conn.execute(sql, params)  # type: ignore[no-any-return]
            if autocommit:
                wait = self._wait(db)
                if many:
                    return db.executemany(sql, params, timeout=wait)
                return db.execute(sql, params, timeout=wait)
            mode = self._explicit or self._mode
            # The gateway's own routing, asked without a write fallback (a text
            # SQLite judged a write is remembered: next time, no trial on a reader).
            readers = db.core.reader_for(sql) if fn_conn is None else None
            if mode == "deferred" and not many and readers is not None:
                worker = db.core.worker
                if threading.get_ident() in (worker.thread_ident, worker.inline_ident):
                    # Inside a transaction fn, a reader would not see the fn's writes.
                    db.core.check_caller("execute")
                result = db.core.read(readers, sql, params, self._wait(db))
                if result is not None:
                    return result
            block = self._open_block(db, fn_conn)
        if many:
            return block.executemany(sql, params)
        return block.execute(sql, params)

    def _open_block(self, db: Gateway, fn_conn: Any) -> Block:
        if fn_conn is not None:
            cm = fn_conn.savepoint()
            cm.__enter__()
            block = Block(cm, fn_conn)
        else:
            cm = db.writer() if self._timeout is DEFAULT else db.writer(timeout=self._timeout)
            block = Block(cm, cm.__enter__())
        self._block = block
        return block

    def _transaction_statement(self, tx: TxStatement) -> None:
        op, arg = tx
        db = self._gateway()
        if op == "begin":
            if self.in_transaction:
                raise OperationalError("cannot start a transaction within a transaction")
            self._explicit = arg if arg == "deferred" else "immediate"
            if self._explicit == "immediate" or _bound_conn(db) is not None:
                self._open_block(db, _bound_conn(db))
        elif op in ("commit", "rollback"):
            if not self.in_transaction:
                verb = "commit" if op == "commit" else "rollback"
                raise OperationalError(f"cannot {verb} - no transaction is active")
            self.commit() if op == "commit" else self.rollback()
        elif op == "savepoint":
            if self._block is None:
                self._savepoint_tx = self._level is None and self._explicit is None
                self._open_block(db, _bound_conn(db))
            assert self._block is not None
            self._block.savepoint(arg)
        else:
            block = self._block
            if block is None or not block.has_savepoint(arg):
                raise OperationalError(f"no such savepoint: {arg}")
            if op == "release":
                block.release(arg)
                if self._savepoint_tx and not block.has_savepoints():
                    self.commit()  # SQLite: releasing the outermost savepoint commits
            else:
                block.rollback_to(arg)
