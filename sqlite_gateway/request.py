"""A request travelling from a caller to the worker, and the queue markers.

A :class:`Request` carries its own stdlib :class:`concurrent.futures.Future`:
the caller waits on it, the worker completes it exactly once (or never runs
it, when the caller cancelled it before it started).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Union

Params = Union[Sequence[Any], Mapping[str, Any]]


class Kind(enum.Enum):
    EXECUTE = "execute"  # one SQL string (it may hold several statements)
    EXECUTEMANY = "executemany"  # one statement, a list of parameter sets
    TRANSACTION = "transaction"  # fn(conn, *args, **kwargs) inside a savepoint
    EXCLUSIVE = "exclusive"  # fn(raw_conn) alone, between batches, no transaction
    FLUSH = "flush"  # barrier: answered once everything before it is done


class Request:
    """One unit of work; created by the facade, run by the worker."""

    __slots__ = ("kind", "sql", "params", "fn", "args", "kwargs", "future", "seq",
                 "priority", "enqueued")

    def __init__(
        self,
        kind: Kind,
        sql: str | None = None,
        params: Any = None,
        fn: Callable[..., Any] | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> None:
        self.kind = kind
        self.sql = sql
        self.params = params
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future: Future[Any] = Future()
        self.seq = 0  # given by the queue when the request is accepted
        self.priority = priority
        self.enqueued = time.monotonic()

    def claim(self) -> bool:
        """Mark the request running; False if its caller cancelled it first.

        Safe to call again on a request already running (a re-run), and on
        one already finished or cancelled (it answers False).
        """
        future = self.future
        if future.running():
            return True
        if future.done():
            return False
        return future.set_running_or_notify_cancel()

    def __repr__(self) -> str:
        what = self.sql if self.fn is None else getattr(self.fn, "__qualname__", self.fn)
        return f"<Request #{self.seq} {self.kind.value} {what!r}>"


class _Marker:
    """A named singleton that travels in the queue (readable in logs)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


STOP = _Marker("STOP")
"""Put last by ``close()``: the worker finishes what came before, then exits."""


def check_sql(sql: object) -> str:
    """Return ``sql`` if it is a non-empty str; raise a teaching error otherwise."""
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    if not sql.strip():
        raise ValueError("sql is empty")
    return sql


def check_params(params: object) -> Params:
    """Accept a tuple/list/other sequence or a mapping of bindings.

    A str or bytes is refused: SQLite would bind it one character at a time.
    The types of the values themselves are left to apsw, whose TypeError names
    the offending argument.
    """
    if params is None:
        return ()
    if isinstance(params, (str, bytes, bytearray, memoryview)) or not isinstance(
            params, (Sequence, Mapping)):
        raise TypeError(
            "params must be a sequence (tuple, list) or a mapping (dict), "
            f"not {type(params).__name__}")
    return params
