"""Django's SQL functions on an apsw connection (imports Django).

Django's ``sqlite3`` backend registers about 30 functions on each connection it
opens (``django_date_extract``, ``django_datetime_trunc``, ``regexp``, ``MD5``,
``STDDEV_POP``, ...); a query using one fails with "no such function" on a
connection that lacks it. The backend passes :func:`register` to the gateway as
its connection set-up hook, so the writer, every reader and every reopened
connection get them. Django's own registration code is run against a small
adapter that speaks the ``sqlite3`` calls it makes (``create_function``,
``create_aggregate``, ``execute``), so the list stays Django's.

An exception raised inside one of them fails the statement as it does with
``sqlite3`` (an ``OperationalError``, "user-defined function raised
exception"), not as the Python exception itself, which apsw would pass on and
Django would not take for a database error.
"""

from __future__ import annotations

from typing import Any

import apsw
from django.db.backends.sqlite3._functions import register as _django_register

__all__ = ["register"]


class _Sqlite3Calls:
    """The three ``sqlite3.Connection`` calls Django's ``register`` makes, on apsw."""

    __slots__ = ("_conn",)

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def create_function(self, name: str, narg: int, func: Any, *,
                        deterministic: bool = False) -> None:
        def call(*args: Any) -> Any:
            try:
                return func(*args)
            except Exception as exc:
                raise apsw.SQLError("user-defined function raised exception") from exc

        self._conn.create_scalar_function(name, call, narg, deterministic=deterministic)

    def create_aggregate(self, name: str, narg: int, aggregate_class: Any) -> None:
        # sqlite3 takes a class with step()/finalize(); apsw a factory giving
        # (context, step(context, *args), final(context)).
        def factory() -> tuple[Any, Any, Any]:
            return _Aggregate(aggregate_class), _step, _final

        self._conn.create_aggregate_function(name, factory, narg)

    def execute(self, sql: str) -> apsw.Cursor:
        return self._conn.execute(sql)


class _Aggregate:
    """One aggregate's state: the instance is made at its first row, so that
    over no rows the result is NULL and ``finalize`` is not called (as sqlite3)."""

    __slots__ = ("cls", "instance")

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.instance: Any = None


def _step(context: _Aggregate, *args: Any) -> None:
    try:
        if context.instance is None:
            context.instance = context.cls()
        context.instance.step(*args)
    except Exception as exc:
        raise apsw.SQLError("user-defined aggregate's 'step' method raised error") from exc


def _final(context: _Aggregate) -> Any:
    if context.instance is None:
        return None
    try:
        return context.instance.finalize()
    except Exception as exc:
        raise apsw.SQLError("user-defined aggregate's 'finalize' method raised error") from exc


def register(conn: apsw.Connection) -> None:
    """Register every SQL function Django's sqlite3 backend uses on ``conn``."""
    _django_register(_Sqlite3Calls(conn))
