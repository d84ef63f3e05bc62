"""Django's SQL functions on an apsw connection (imports Django).

Django's ``sqlite3`` backend registers about 30 functions on each connection it
opens (``django_date_extract``, ``django_datetime_trunc``, ``regexp``, ``MD5``,
``STDDEV_POP``, ...); a query using one fails with "no such function" on a
connection that lacks it. The backend passes :func:`register` to the gateway as
its connection set-up hook, so the writer, every reader and every reopened
connection get them. Django's own registration code is run against a small
adapter that speaks the ``sqlite3`` calls it makes (``create_function``,
``create_aggregate``, ``execute``), so the list stays Django's.
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
        self._conn.create_scalar_function(name, func, narg, deterministic=deterministic)

    def create_aggregate(self, name: str, narg: int, aggregate_class: Any) -> None:
        # sqlite3 takes a class with step()/finalize(); apsw a factory giving
        # (context, step(context, *args), final(context)).
        def factory() -> tuple[Any, Any, Any]:
            return aggregate_class(), _step, _final

        self._conn.create_aggregate_function(name, factory, narg)

    def execute(self, sql: str) -> apsw.Cursor:
        return self._conn.execute(sql)


def _step(context: Any, *args: Any) -> None:
    context.step(*args)


def _final(context: Any) -> Any:
    return context.finalize()


def register(conn: apsw.Connection) -> None:
    """Register every SQL function Django's sqlite3 backend uses on ``conn``."""
    _django_register(_Sqlite3Calls(conn))
