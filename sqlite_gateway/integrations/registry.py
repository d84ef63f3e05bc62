"""One gateway per database file per process, shared by every DB-API connection.

The DB-API adapter (:mod:`sqlite_gateway.integrations.dbapi`) and the ORMs on
top of it open databases by path, many times (an engine per test, a pool of
connections per engine). Each open of a path gets the same started
:class:`~sqlite_gateway.Gateway`, so every connection to one file shares one
writer, one queue and one group commit, which is the point of the gateway.

Keyed by process id and real path: a child forked after a gateway started
finds no entry of its own pid and opens its own (the parent's gateway refuses
calls in a child). Gateways opened here stay open until :func:`close_all` or
the interpreter's exit (the gateway's own exit hook drains them).

Imports no framework.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import apsw

from ..gateway import Gateway
from ..lifecycle import State
from ..options import Options
from .settings import parse_settings

__all__ = ["builtin_functions", "close", "close_all", "open_gateway"]

_lock = threading.Lock()
_gateways: dict[tuple[int, str], Gateway] = {}


def _regexp(pattern: str, text: str | None) -> bool | None:
    """SQL ``x REGEXP y`` (as Python's ``sqlite3`` users get from SQLAlchemy)."""
    if text is None or pattern is None:
        return None
    return re.search(pattern, text) is not None


def _floor(value: Any) -> Any:
    return None if value is None else math.floor(value)


def builtin_functions(conn: apsw.Connection) -> None:
    """Register the SQL functions SQLAlchemy's stock SQLite driver adds to
    each connection (``regexp``, ``floor``) on one apsw connection."""
    conn.create_scalar_function("regexp", _regexp, 2, deterministic=True)  # type: ignore[arg-type]
    conn.create_scalar_function("floor", _floor, 1, deterministic=True)  # type: ignore[arg-type]


def open_gateway(path: str, options: Mapping[str, Any] | None = None,
                 setup: Callable[[apsw.Connection], None] | None = None) -> Gateway:
    """The started gateway of ``path`` in this process; opened on first use.

    Thread-safe. ``options`` are gateway options (text values are parsed as
    in every integration: ``{"readers": "8"}``); they apply when this call
    opens the gateway. When the gateway is already open, every option given
    must equal the running one's, or ValueError says which differs: one file
    has one writer and one set of options per process.

    Raises:
        ValueError, TypeError: an unknown option or a value out of range,
            checked before anything is opened; ``:memory:`` or no path.
        apsw.Error: the file could not be opened.
    """
    settings = parse_settings(dict(options or {}), source="{}")
    if not path or path == ":memory:":
        raise ValueError(f"the gateway needs a database file, not {path!r}: SQLite's "
                         "in-memory databases are private to one connection, and the "
                         "gateway shares its connections (it needs WAL, which needs a file)")
    key = (os.getpid(), os.path.realpath(path))
    with _lock:
        db = _gateways.get(key)
        if db is not None and db.state is State.RUNNING:
            _check_same(db, settings.options)
            return db
        hook = _compose(setup)
        db = Gateway(path, **settings.options, **_hook_option(hook)).start()
        _gateways[key] = db
        return db


def _hook_option(hook: Callable[[apsw.Connection], None]) -> dict[str, Any]:
    """The gateway's connection set-up option, when this version has it."""
    from ..options import NAMES
    for name in ("setup", "connection_setup", "on_connect"):
        if name in NAMES:
            return {name: hook}
    return {}


def _compose(setup: Callable[[apsw.Connection], None] | None
             ) -> Callable[[apsw.Connection], None]:
    if setup is None:
        return builtin_functions

    def both(conn: apsw.Connection) -> None:
        builtin_functions(conn)
        setup(conn)
    return both


def _check_same(db: Gateway, given: Mapping[str, Any]) -> None:
    wanted = Options(**given)  # normalised as the running gateway's were
    differ = [f"{name}={getattr(wanted, name)!r} (running: {getattr(db.options, name)!r})"
              for name in given if getattr(db.options, name) != getattr(wanted, name)]
    if differ:
        raise ValueError(
            f"the gateway on {db.path!r} is already open in this process with other "
            f"options: {', '.join(differ)}; one file has one writer and one set of options "
            "per process: give every engine/connection on it the same options, or none")


def close(path: str, timeout: float | None = None) -> None:
    """Close this process's gateway on ``path`` if it is open (it drains first).

    Thread-safe. Connections that still refer to it reopen it at their next
    statement, with the options they were made with.
    """
    with _lock:
        db = _gateways.pop((os.getpid(), os.path.realpath(path)), None)
    if db is not None:
        db.close(timeout)


def close_all(timeout: float | None = None) -> None:
    """Close every gateway this process opened here (each drains first).

    Thread-safe. For tests and orderly shutdown; connections that still
    refer to a closed gateway reopen it at their next statement.
    """
    with _lock:
        mine = [db for (pid, _), db in _gateways.items() if pid == os.getpid()]
        _gateways.clear()
    for db in mine:
        db.close(timeout)
