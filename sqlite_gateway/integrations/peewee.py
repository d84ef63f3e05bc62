"""peewee on the gateway: :class:`GatewayDatabase`, for models that stay as they are.

::

    from peewee import IntegerField, Model
    from sqlite_gateway.integrations.peewee import GatewayDatabase

    db = GatewayDatabase("app.db", readers=8)      # gateway options as keywords

    class Counter(Model):
        n = IntegerField(default=0)
        class Meta:
            database = db

    with db.atomic():                                # holds the writer from its start
        counter = Counter.get_by_id(1)
        counter.n += 1                                # read-modify-write: exact
        counter.save()
    # committed here, durable with synchronous="FULL"

Where each statement runs (through :mod:`sqlite_gateway.integrations.dbapi`,
one DB-API connection per thread, as peewee keeps them):

- outside ``atomic()``/``transaction()``: a query on one of the gateway's
  readers, a write as one gateway call (committed, with others in its
  batch, when it returns);
- inside ``atomic()``: a write block (``Gateway.writer()``) held from the
  block's first statement, as ``atomic('IMMEDIATE')`` would on stock SQLite,
  so a read-modify-write inside it is exact; it commits with the batch it
  joins when the outermost block ends, and rolls back if it raises. A nested
  ``atomic()`` is a savepoint that rolls back alone. The write block's hold
  limit applies (``hold_limit``, default 5 s): keep slow work outside.

peewee's SQL functions (``date_part``, ``date_trunc``, ``_pw_json_contains``,
``regexp`` with ``regexp_function=True``), and the functions, aggregates,
collations and window functions an app registers (``@db.func()``,
``db.register_aggregate``...), are put on every connection the gateway
opens (the writer, each reader) through its ``connection_setup`` option, so
``.year`` lookups and ``fn.date_part`` work on the readers too. Register
them before the first query: connections opened earlier do not get later
ones.

Connection settings belong to the gateway: peewee's ``pragmas`` are taken
as gateway options where the gateway has one (``synchronous``,
``busy_timeout``, ``wal_autocheckpoint``), accepted when they say what the
gateway does already (``journal_mode='wal'``, ``foreign_keys=1``), applied
to every connection for ``cache_size``, ``temp_store`` and
``journal_size_limit``, and refused otherwise, with the reason.

Needs the ``peewee`` extra (``pip install 'sqlite-gateway[peewee]'``).
"""

from __future__ import annotations

import datetime
import decimal
import os
from collections.abc import Callable, Mapping
from typing import Any

import apsw

try:
    import peewee
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError("sqlite_gateway.integrations.peewee needs peewee: "
                      "pip install 'sqlite-gateway[peewee]'") from exc

from ..gateway import Gateway
from . import dbapi

__all__ = ["GatewayDatabase"]

_SENTINEL: Any = getattr(peewee, "SENTINEL")  # noqa: B009 (untyped in peewee's stubs)

# The adapters peewee registers with sqlite3, for the adapter's connections too.
for _type in (decimal.Decimal, datetime.date, datetime.time):
    dbapi.register_adapter(_type, str)

# PRAGMA -> the gateway option that sets it, and how its value converts.
_AS_OPTIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "synchronous": ("synchronous", lambda v: {"0": "OFF", "1": "NORMAL", "2": "FULL",
                                               "3": "EXTRA"}.get(str(v), str(v).upper())),
    "busy_timeout": ("busy_timeout", lambda v: int(v) / 1000),
    "wal_autocheckpoint": ("autocheckpoint", int),
}
# PRAGMAs already as the gateway sets them: accepted when they say so.
_ALREADY = {"journal_mode": "wal", "foreign_keys": "1"}
_HANG_TIMEOUT = 60.0  # the gateway's default hang_timeout, which must exceed busy_timeout
# Per-connection tuning with no effect on results: applied to every connection.
_TUNING = ("cache_size", "temp_store", "journal_size_limit")


class GatewayDatabase(peewee.SqliteDatabase):
    """A peewee ``SqliteDatabase`` whose connections go through a gateway.

    Args:
        database: the database file (``:memory:`` is refused: the gateway
            needs a file), or None to ``init()`` it later, as in peewee.
        gateway: a started :class:`~sqlite_gateway.Gateway` to use instead
            of the process-wide one of ``database`` (then its options and
            functions are as it was made: give it
            ``connection_setup=db.connection_setup`` for peewee's functions).
        pragmas: see the module docstring.
        lock_type: the BEGIN of ``atomic()``/``transaction()``; default
            ``"IMMEDIATE"`` (the write block is held from the start).
        connection_setup: an app's own hook, run on every connection after
            peewee's functions.
        **kwargs: peewee's ``Database`` arguments (``thread_safe``,
            ``autoconnect``, ``field_types``...), and gateway options
            (``readers=8``, ``synchronous="NORMAL"``, ``hold_limit=2``...).
            peewee's ``timeout`` (sqlite3's busy timeout) is the gateway's
            ``busy_timeout`` when given.

    Thread-safe as peewee's databases are: each thread has its own
    connection (and its own write block inside ``atomic()``).
    """

    # peewee's own attributes (untyped in its stubs), read here.
    _pragmas: Any
    _functions: dict[str, tuple[Callable[..., Any], int, bool | None]]
    _aggregates: dict[str, tuple[type, int]]
    _collations: dict[str, Callable[[Any, Any], int]]
    _window_functions: dict[str, tuple[type, int]]
    _tuning: list[tuple[str, int | str]]

    def __init__(self, database: str | os.PathLike[str] | None, *,
                 gateway: Gateway | None = None, pragmas: Any = None,
                 lock_type: str | None = "IMMEDIATE",
                 connection_setup: Callable[[apsw.Connection], object] | None = None,
                 **kwargs: Any) -> None:
        self._gateway = gateway
        self._app_setup = connection_setup
        self._begin_lock = lock_type  # (peewee < 4.5 has no lock_type of its own)
        super().__init__(None if database is None else os.fspath(database),
                         pragmas=pragmas, **kwargs)

    def init(self, database: str | None, pragmas: Any = None, timeout: Any = None,
             returning_clause: Any = None, **kwargs: Any) -> None:
        """As peewee's ``init()``; the pragmas and options are checked now."""
        if database == ":memory:":
            raise ValueError("GatewayDatabase needs a database file, not ':memory:' (the "
                             "gateway shares its connections and needs WAL, which needs a "
                             "file)")
        super().init(database, pragmas=pragmas, timeout=5 if timeout is None else timeout,
                     returning_clause=returning_clause, **kwargs)
        options, self._tuning = _from_pragmas(self._pragmas)
        if timeout is not None:
            options.setdefault("busy_timeout", float(timeout))
        busy = options.get("busy_timeout", kwargs.get("busy_timeout", 0.0))
        if busy >= _HANG_TIMEOUT and "hang_timeout" not in kwargs:
            options["hang_timeout"] = busy + _HANG_TIMEOUT  # waiting for a lock is no hang
        # Gateway options: given as keywords (connect_params), or from the pragmas.
        self.connect_params = {**options, **self.connect_params}

    @property
    def gateway(self) -> Gateway:
        """The gateway this database's connections run on (connecting if needed)."""
        return self.connection().gateway  # type: ignore[no-untyped-call,no-any-return]

    def connection_setup(self, conn: apsw.Connection) -> None:
        """Put peewee's and the app's functions, aggregates, collations, window
        functions and tuning PRAGMAs on one apsw connection (the gateway runs
        it on each connection it opens)."""
        for name, (fn, count, deterministic) in list(self._functions.items()):
            conn.create_scalar_function(name, fn, count, deterministic=bool(deterministic))
        for name, (klass, count) in list(self._aggregates.items()):
            conn.create_aggregate_function(name, _aggregate(klass), count)
        for name, collation in list(self._collations.items()):
            conn.create_collation(name, collation)
        for name, (klass, count) in list(self._window_functions.items()):
            conn.create_window_function(name, _window(klass), count)
        for pragma, value in self._tuning:
            _tune(conn, pragma, value)
        if self._app_setup is not None:
            self._app_setup(conn)

    def _connect(self) -> dbapi.Connection:
        # Autocommit at the DB-API level: peewee sends BEGIN/COMMIT/SAVEPOINT
        # itself, and the adapter maps them onto write blocks and savepoints.
        return dbapi.connect(self.database, isolation_level=None, gateway=self._gateway,
                             setup=self.connection_setup, **self.connect_params)

    def pragma(self, key: str, value: Any = _SENTINEL, permanent: bool = False,
               schema: str | None = None) -> Any:
        """Read a PRAGMA (on a reader), or accept setting one to what the gateway
        has already (``foreign_keys`` on, ``journal_mode`` wal). Setting any
        other is refused by the gateway (ConnectionSettingError): its
        connections are shared; see the module docstring."""
        if value is not _SENTINEL and schema is None:
            name = str(key).lower()
            wanted = _ALREADY.get(name)
            normal = {"on": "1", "true": "1"}.get(str(value).lower(), str(value).lower())
            if wanted is not None and normal == wanted:
                return super().pragma(key, schema=schema)  # already so: read it back
        return super().pragma(key, value, permanent, schema)

    def _load_functions(self, conn: Any) -> None:
        _registered_late("function")

    def _load_aggregates(self, conn: Any) -> None:
        _registered_late("aggregate")

    def _load_collations(self, conn: Any) -> None:
        _registered_late("collation")

    def _load_window_functions(self, conn: Any) -> None:
        _registered_late("window function")

    def begin(self, lock_type: str | None = None) -> None:
        """Send ``BEGIN [lock_type]`` (default: this database's ``lock_type``,
        ``IMMEDIATE`` unless given): the adapter opens the write block."""
        super().begin(lock_type or self._begin_lock)

    def _add_conn_hooks(self, conn: Any) -> None:
        """Nothing per connection: functions and settings are the gateway's
        (see :meth:`connection_setup`)."""

    def _set_pragmas(self, conn: Any) -> None:
        """Nothing per connection (see the module docstring)."""


def _registered_late(what: str) -> None:
    """peewee registers a new function on the open connection: the gateway's
    connections were set up when they opened, so say when to register instead."""
    raise peewee.NotSupportedError(
        f"this {what} was registered after the database was connected: the gateway puts "
        "functions on its connections as it opens them (connection_setup), so register "
        "every function, aggregate, collation and window function before the first query")


def _from_pragmas(pragmas: Any) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(gateway options, tuning PRAGMAs) from peewee's ``pragmas``; ValueError
    for one the gateway cannot honour."""
    options: dict[str, Any] = {}
    tuning: list[tuple[str, Any]] = []
    items = pragmas.items() if isinstance(pragmas, Mapping) else (pragmas or ())
    for name, value in items:
        key = str(name).lower()
        if key in _AS_OPTIONS:
            option, convert = _AS_OPTIONS[key]
            options[option] = convert(value)
        elif key in _ALREADY:
            normal = {"on": "1", "true": "1"}.get(str(value).lower(), str(value).lower())
            if normal != _ALREADY[key]:
                raise ValueError(f"pragma {name}={value!r} is not supported: the gateway "
                                 f"always runs with {key}={_ALREADY[key]}")
        elif key in _TUNING:
            tuning.append((key, _tuning_value(name, value)))
        else:
            raise ValueError(
                f"pragma {name}={value!r} is not supported by GatewayDatabase: the gateway "
                "owns its connections' settings (pass gateway options such as "
                "synchronous or busy_timeout as keywords; read any PRAGMA with db.pragma())")
    return options, tuning


def _tuning_value(name: str, value: Any) -> int | str:
    """A tuning PRAGMA's value: a whole number, or temp_store's words."""
    text = str(value).strip().lower()
    if text in ("default", "file", "memory") and name.lower() == "temp_store":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"pragma {name}={value!r}: a whole number is needed") from None


def _tune(conn: apsw.Connection, pragma: str, value: int | str) -> None:
    """Set a tuning PRAGMA on a gateway connection, past its guard (which
    refuses it from callers: it would change the shared connection for all).
    The statement is not cached, so no caller's SQL can find it prepared."""
    guard = conn.authorizer
    conn.authorizer = None
    try:
        conn.cursor().execute(f"PRAGMA {pragma} = {value}", can_cache=False)
    finally:
        conn.authorizer = guard


def _aggregate(klass: type) -> Callable[[], tuple[Any, Any, Any]]:
    """An apsw aggregate factory for a ``sqlite3``-style class (step, finalize)."""
    def factory() -> tuple[Any, Any, Any]:
        return klass(), lambda ctx, *args: ctx.step(*args), lambda ctx: ctx.finalize()
    return factory


def _window(klass: type) -> Callable[[], tuple[Any, Any, Any, Any, Any]]:
    """An apsw window-function factory for a ``sqlite3``-style class."""
    def factory() -> tuple[Any, Any, Any, Any, Any]:
        return (klass(), lambda ctx, *args: ctx.step(*args), lambda ctx: ctx.finalize(),
                lambda ctx: ctx.value(), lambda ctx, *args: ctx.inverse(*args))
    return factory
