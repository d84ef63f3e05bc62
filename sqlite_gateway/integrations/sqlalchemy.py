"""SQLAlchemy on the gateway: the ``sqlite+gateway`` dialect (imports sqlalchemy).

``create_engine("sqlite+gateway:///app.db")`` works with no other code (the
dialect is registered by the package's entry point): the URL's path is the
stock SQLite dialect's (``///relative.db``, ``////absolute.db``); its query
holds gateway options, typed as every integration types them, and ``begin``::

    engine = create_engine("sqlite+gateway:///app.db?readers=8&synchronous=NORMAL")
    engine = create_engine("sqlite+gateway:///app.db?begin=immediate")

An unknown key is an ``ArgumentError`` at ``create_engine``. Every engine on
one file in a process shares one gateway (opened at the first connection; a
child process after a fork opens its own). To use a Gateway you made
yourself: :func:`engine_for` (``create_engine("sqlite+gateway://",
connect_args={"gateway": db})``).

Sessions run unchanged. A session's write block starts at its first write by
default (as stock SQLAlchemy on ``sqlite3``: a read-only session never holds
the writer); with ``begin=immediate`` it starts at its first statement, so a
read-modify-write in one session is exact. :func:`run_in_transaction` runs a
function with a Session inside one gateway transaction fn: the fastest path
(its commit is shared with the other requests of its batch).

The driver is :mod:`sqlite_gateway.integrations.dbapi`; see there what
carries over from ``sqlite3`` and what does not.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, exc, pool
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from ..gateway import Gateway
from ..lifecycle import State
from ..options import NAMES
from . import dbapi
from .settings import parse_settings

__all__ = ["GatewayDialect", "dialect", "engine_for", "run_in_transaction"]

T = TypeVar("T")

# A BEGIN sent through SQLAlchemy: the leftover recipe of stock sqlite3 setups.
_BEGIN = re.compile(r"\s*BEGIN\b(\s+(?P<mode>\w+))?", re.IGNORECASE)
_URL_KEYS = ("begin",)


class GatewayPool(pool.QueuePool):
    """QueuePool without a ceiling by default: a pooled connection costs no
    SQLite connection (the gateway owns those), so threads never wait for one."""

    def __init__(self, creator: Any, pool_size: int = 5, max_overflow: int = -1,
                 **kw: Any) -> None:
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)


class GatewayDialect(SQLiteDialect_pysqlite):
    """The stock pysqlite dialect with the gateway's DB-API module as its driver."""

    driver = "gateway"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return dbapi

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return GatewayPool

    def create_connect_args(self, url: URL) -> Any:
        if url.username or url.password or url.host or url.port:
            raise exc.ArgumentError(
                f"Invalid sqlite+gateway URL: {url}; valid forms are "
                "sqlite+gateway:///relative/path.db and sqlite+gateway:////absolute/path.db")
        if url.database == ":memory:":
            raise exc.ArgumentError(
                "sqlite+gateway needs a database file, not :memory: (the gateway shares "
                "its connections and needs WAL, which needs a file)")
        query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
        begin = query.pop("begin", "deferred").lower()
        if begin not in ("deferred", "immediate"):
            raise exc.ArgumentError(f"begin must be 'deferred' or 'immediate', not {begin!r}")
        known = {*NAMES, *_URL_KEYS}
        unknown = sorted(set(query) - known)
        if unknown:
            raise exc.ArgumentError(f"sqlite+gateway URL: unknown key(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(known))}")
        try:
            options = parse_settings(query, source="{}").options
        except (ValueError, TypeError) as error:
            raise exc.ArgumentError(f"sqlite+gateway URL: {error}") from None
        params: dict[str, Any] = {"begin": begin, **options}
        return ([url.database or None], params)

    def on_connect(self) -> Any:
        return None  # regexp and floor are on every gateway connection already

    def set_isolation_level(self, dbapi_connection: Any, level: Any) -> None:
        if level == "AUTOCOMMIT":
            dbapi_connection.isolation_level = None
            return
        if level not in self._isolation_lookup:
            raise exc.ArgumentError(f"Invalid value {level!r} for isolation_level")
        dbapi_connection.isolation_level = ""
        # read_uncommitted only acts in shared-cache mode, which the gateway
        # never uses: both levels read committed snapshots. Kept for get.
        dbapi_connection.sqla_level = level

    def get_isolation_level(self, dbapi_connection: Any) -> Any:
        return getattr(dbapi_connection, "sqla_level", "SERIALIZABLE")

    def do_execute(self, cursor: Any, statement: str, parameters: Any,
                   context: Any = None) -> None:
        _refuse_begin(statement)
        cursor.execute(statement, parameters)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        _refuse_begin(statement)
        cursor.execute(statement)

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return isinstance(e, dbapi.ProgrammingError) and (
            "Cannot operate on a closed database." in str(e))


dialect = GatewayDialect


def _refuse_begin(statement: str) -> None:
    match = _BEGIN.match(statement)
    if match is None or (match["mode"] or "").upper() not in (
            "", "DEFERRED", "IMMEDIATE", "EXCLUSIVE", "TRANSACTION"):
        return
    raise exc.InvalidRequestError(
        f"{statement.strip()!r} sent through SQLAlchemy: the sqlite+gateway dialect runs "
        "transactions itself. Remove the 'begin' event that emits BEGIN and the 'connect' "
        "event that sets isolation_level = None (the stock sqlite3 recipe); for a "
        "transaction that holds the writer from its first statement (exact "
        "read-modify-write), add ?begin=immediate to the URL instead")


_engines: weakref.WeakKeyDictionary[Gateway, Engine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()
# An engine's gateway, with the process that looked it up (a child has its own).
_gateways: weakref.WeakKeyDictionary[Engine, tuple[int, Gateway]] = weakref.WeakKeyDictionary()


def engine_for(gateway: Gateway, **kwargs: Any) -> Engine:
    """An Engine on an existing started ``gateway`` (``kwargs`` go to
    ``create_engine``; ``connect_args={"begin": "immediate"}`` sets the begin mode)."""
    connect_args = {**kwargs.pop("connect_args", {}), "gateway": gateway}
    return create_engine("sqlite+gateway://", connect_args=connect_args, **kwargs)


def _engine_of(bind: Engine | Gateway) -> tuple[Engine, Gateway]:
    if isinstance(bind, Gateway):
        with _engines_lock:
            engine = _engines.get(bind)
            if engine is None:
                engine = _engines[bind] = engine_for(bind)
        return engine, bind
    if not isinstance(bind, Engine) or not isinstance(bind.dialect, GatewayDialect):
        raise TypeError("run_in_transaction needs a sqlite+gateway Engine or a Gateway, "
                        f"not {bind!r}")
    cached = _gateways.get(bind)
    if cached is not None and cached[0] == os.getpid() and cached[1].state is State.RUNNING:
        return bind, cached[1]
    with bind.connect() as connection:  # the engine's gateway, opened if need be
        gateway = connection.connection.dbapi_connection.gateway  # type: ignore[union-attr]
    _gateways[bind] = (os.getpid(), gateway)
    return bind, gateway


def run_in_transaction(bind: Engine | Gateway, fn: Callable[..., T], /, *args: Any,
                       timeout: Any = None, **kwargs: Any) -> T:
    """Run ``fn(session, *args, **kwargs)`` in one gateway transaction; return its value.

    The Session runs on the writer inside ``gateway.transaction``: its
    statements go straight to the transaction's handle, and its commit is
    the batch's group commit, the fastest way to write with the ORM. The
    session is committed when fn returns (flushing what is pending) and the
    whole unit is rolled back if fn raises (the exception is re-raised).
    ``session.rollback()`` inside fn undoes only the session's work so far;
    ``session.begin_nested()`` is a savepoint.

    As with ``transaction(fn)``, fn may run twice if another request of its
    batch rolled the batch back: keep side effects in the database. Other
    gateway calls inside fn raise NestedCallError (use the session).

    Args:
        timeout: seconds to wait for the answer (None: the gateway's default).
    """
    engine, gateway = _engine_of(bind)

    def body(conn: Any) -> T:
        with dbapi.bound_to(gateway, conn), Session(engine) as session:
            value = fn(session, *args, **kwargs)
            session.commit()
            return value

    if timeout is None:
        return gateway.transaction(body)
    return gateway.transaction(body, timeout=timeout)
