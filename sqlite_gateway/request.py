"""A request travelling from a caller to the worker, and the queue markers.

A :class:`Request` carries its own stdlib :class:`concurrent.futures.Future`:
the caller waits on it, the worker completes it exactly once (or never runs
it, when the caller cancelled it before it started).
"""

from __future__ import annotations

import _thread
import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Union

from .errors import RequestTimeout

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
                 "priority", "enqueued", "_answered", "_claimed")

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
        # Held until the answer is set. A waiting caller blocks on this bare
        # lock rather than on the Future's Condition: the cheapest wake-up in
        # CPython (a thread ping-pong measured 48 us with Future.result(), 34 us
        # with a bare lock, on the 2-core build machine).
        self._answered = _thread.allocate_lock()
        self._answered.acquire()
        self._claimed: bool | None = None

    def set_result(self, value: Any) -> None:
        """Answer the request; a no-op if it was answered already.

        Normally only the worker answers, once. But when the watchdog gives a
        stuck worker up it answers the worker's requests from its own thread,
        and the worker may return later: the first answer wins (the Future
        sets it atomically), and the lock is released only by the winner.
        """
        try:
            self.future.set_result(value)
        except InvalidStateError:
            return
        self._answered.release()

    def set_exception(self, exc: BaseException) -> None:
        """Answer the request with an error; a no-op if it was answered already."""
        try:
            self.future.set_exception(exc)
        except InvalidStateError:
            return
        self._answered.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until answered; False if ``timeout`` seconds passed first."""
        return self._answered.acquire(True, -1 if timeout is None else timeout)

    def claim(self) -> bool:
        """Mark the request running; False if its caller cancelled it first.

        Only the first call asks the Future (the caller may be cancelling it
        at that moment); later calls, for a re-run, repeat that answer. If
        another thread claimed it at the same moment (the watchdog failing a
        stuck worker's batch), that thread owns it and this call says False.
        """
        claimed = self._claimed
        if claimed is None:  # first look: PENDING or CANCELLED
            try:
                claimed = self.future.set_running_or_notify_cancel()
            except RuntimeError:  # already RUNNING or FINISHED: claimed elsewhere
                return False
            self._claimed = claimed
        return claimed

    def __repr__(self) -> str:
        what = self.sql if self.fn is None else getattr(self.fn, "__qualname__", self.fn)
        return f"<Request #{self.seq} {self.kind.value} {what!r}>"


def wait_for(request: Request, timeout: float | None,
             interrupt: Callable[[Request], bool] | None = None) -> Any:
    """Wait for ``request``'s answer in the caller's thread; return or raise it.

    Args:
        interrupt: called with the request when the wait times out after it
            had started; True if it stopped the request's running SQL.

    Raises:
        RequestTimeout: no answer within ``timeout``. The request is cancelled
            if it had not started (then it never runs); if it had, its running
            SQL statement is interrupted when ``interrupt`` can.
        BaseException: what the request raised, the same object, with the
            worker-side frames in its traceback.
    """
    future = request.future
    if not request.wait(timeout) and not future.done():
        started = not future.cancel()
        if not (started and future.done()):  # answered in the meantime: fall through
            interrupted = started and interrupt is not None and interrupt(request)
            raise RequestTimeout(timeout or 0.0, started, interrupted)
    # Answered: result() returns the value or raises the worker's exception
    # object itself (Future drops its own reference to it as it raises).
    return future.result(0)


class _Marker:
    """A named singleton that travels in the queue (readable in logs)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


STOP = _Marker("STOP")
"""Put last by ``close()``: the worker finishes what came before, then exits."""


PRIORITIES = {"interactive": 0, "background": 1}
"""Priority names and their queue lanes: lane 0 is served first."""


def check_priority(priority: object) -> int:
    """Return the lane of a priority name; raise a teaching error otherwise."""
    lane = PRIORITIES.get(priority) if isinstance(priority, str) else None
    if lane is None:
        raise ValueError(f"priority must be one of {', '.join(map(repr, PRIORITIES))}, "
                         f"not {priority!r}")
    return lane


def check_many(seq_of_params: object) -> list[Params]:
    """Materialise an iterable of parameter sets (each checked by
    :func:`check_params`) in the caller's thread; a str or bytes is refused."""
    if isinstance(seq_of_params, (str, bytes)) or not isinstance(seq_of_params, Iterable):
        raise TypeError("seq_of_params must be an iterable of parameter sets, "
                        f"not {type(seq_of_params).__name__}")
    return [check_params(p) for p in seq_of_params]


def check_sql(sql: object) -> str:
    """Return ``sql`` if it is a non-empty str; raise a teaching error otherwise."""
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    if not sql.strip():
        raise ValueError("sql is empty")
    return sql


_PLAIN_PARAMS = frozenset({tuple, list, dict})  # the common case, checked without ABCs


def check_params(params: object) -> Params:
    """Accept a tuple/list/other sequence or a mapping of bindings.

    A str or bytes is refused: SQLite would bind it one character at a time.
    The types of the values themselves are left to apsw, whose TypeError names
    the offending argument.
    """
    if type(params) in _PLAIN_PARAMS:
        return params  # type: ignore[return-value]
    if params is None:
        return ()
    if isinstance(params, (str, bytes, bytearray, memoryview)) or not isinstance(
            params, (Sequence, Mapping)):
        raise TypeError(
            "params must be a sequence (tuple, list) or a mapping (dict), "
            f"not {type(params).__name__}")
    return params
