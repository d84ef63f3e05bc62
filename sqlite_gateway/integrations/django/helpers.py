"""Run Django ORM code on the writer as one group-committed unit (imports Django)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS, connections

from ...options import DEFAULT, Timeout
from ..dbapi import bound_to

__all__ = ["on_writer"]

T = TypeVar("T")

_inside = threading.local()  # .aliases: databases an on_writer function runs on in this thread


@overload
def on_writer(func: Callable[..., T], /) -> Callable[..., T]: ...


@overload
def on_writer(*, using: str = DEFAULT_DB_ALIAS, timeout: Timeout = DEFAULT,
              priority: str = "interactive") -> Callable[[Callable[..., T]], Callable[..., T]]: ...


def on_writer(func: Callable[..., T] | None = None, /, *, using: str = DEFAULT_DB_ALIAS,
              timeout: Timeout = DEFAULT, priority: str = "interactive") -> Any:
    """Decorator: each call of ``func`` runs on the writer as one transaction fn.

    ::

        @on_writer
        def record_view(name, ts):
            page = Page.objects.get(name=name)
            page.views += 1
            page.save(update_fields=["views"])
            View.objects.create(page=page, ts=ts)

    The ORM statements ``func`` makes on database ``using`` run on the fn's
    connection: they commit together, with the other requests of the batch
    (group commit), and ``func``'s caller returns once they are committed. If
    ``func`` raises, all of its writes are rolled back and the exception is
    re-raised in the caller. Nested ``atomic()`` blocks inside are savepoints;
    an ``on_writer`` function called from inside one runs as part of it.

    As every transaction fn: ``func`` may run in another thread (the
    writer's), it may be run a second time if another request of its batch
    rolled the whole batch back (keep its side effects inside the database),
    and it must not wait for other threads that use the database. Calling it
    inside ``atomic()`` raises ``NestedCallError`` (it would wait for the
    block the caller holds).
    """
    def decorate(inner: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            aliases: set[str] = _inside.__dict__.setdefault("aliases", set())
            if using in aliases:
                return inner(*args, **kwargs)  # already on that writer: part of its unit
            db = connections[using].gateway()

            def fn(conn: Any) -> T:
                mine: set[str] = _inside.__dict__.setdefault("aliases", set())
                mine.add(using)
                try:
                    with bound_to(db, conn):
                        return inner(*args, **kwargs)
                finally:
                    mine.discard(using)

            value: T = db.transaction(fn, timeout=timeout, priority=priority)
            return value
        return wrapper

    return decorate if func is None else decorate(func)
