"""A request travelling from a caller to the worker, and the queue markers.

A :class:`Request` is answered in one of three ways, chosen by who asked:

- ``WAIT`` (the synchronous calls: ``execute``, ``transaction``...): the
  caller blocks on a bare lock that the answer releases; the value or the
  exception is kept on the request. No Future: a ``concurrent.futures.Future``
  allocates a Condition and an RLock and its ``result()`` takes them again,
  which cost about 3 us a call at one thread on the 2-core build machine.
- ``FUTURE`` (``submit``): a stdlib :class:`concurrent.futures.Future` the
  caller holds (a subclass whose done-callbacks cannot hurt the worker).
- ``POST`` (fire-and-forget ``post``): nobody waits; a failure is handed to
  the gateway's failure log instead.

Whatever the way, the first answer wins (the watchdog may answer a stuck
worker's requests while the worker later returns), and a request whose
caller gave up before it started never runs. ``value`` and ``error`` are the
worker's working outcome, written as the request runs; an answer given
through :meth:`Request.set_exception`/``set_result`` (the watchdog's, the
fail-everything path's) is kept apart, so a worker that returns late can
never overwrite what its caller is told.
"""

from __future__ import annotations

import _thread
import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout  # (not the builtin on 3.10)
from concurrent.futures import wait as futures_wait
from typing import Any

import apsw

from .arguments import Params
from .errors import RequestTimeout

logger = logging.getLogger(__name__)


class Kind(enum.Enum):
    EXECUTE = "execute"  # one SQL string (it may hold several statements)
    EXECUTEMANY = "executemany"  # one statement, a list of parameter sets
    TRANSACTION = "transaction"  # fn(conn, *args, **kwargs) inside a savepoint
    EXCLUSIVE = "exclusive"  # fn(raw_conn) alone, between batches, no transaction
    FLUSH = "flush"  # barrier: answered once everything before it is done


class Answer(enum.Enum):
    FUTURE = "future"
    WAIT = "wait"
    POST = "post"


FUTURE, WAIT, POST = Answer.FUTURE, Answer.WAIT, Answer.POST

_new_lock = _thread.allocate_lock


class GatewayFuture(Future):  # type: ignore[type-arg]
    """The stdlib Future that ``submit()`` hands out: contained callbacks, cheap start.

    Done-callbacks run on the worker thread as it answers. The stdlib Future
    logs an ``Exception`` from a callback but lets ``SystemExit`` or
    ``KeyboardInterrupt`` through, which would end the worker; here every
    error of a callback is logged and goes no further. A callback that
    blocks still stalls the worker, and every caller behind it: keep
    callbacks short, and hand slow work to another thread.

    Starting: the worker takes a one-shot token (a bare lock) instead of
    calling ``set_running_or_notify_cancel()``, which takes the Future's
    Condition (0.8 us a row, a fifth of a posted row's whole cost); ``cancel()``
    takes the same token first, so exactly one of them wins. The price:
    ``running()`` stays False while the request runs (``done()`` and
    ``cancelled()`` are exact).
    """

    def __init__(self) -> None:
        super().__init__()
        self._start_token = _new_lock()

    def cancel(self) -> bool:
        """Cancel the request if it has not started: then it never runs."""
        if self._start_token.acquire(False):
            return super().cancel()
        return self.cancelled()

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        def contained(future: Future[Any]) -> None:
            try:
                fn(future)
            except BaseException:
                logger.exception("a done-callback of %r raised; the gateway goes on", future)
        super().add_done_callback(contained)


class Request:
    """One unit of work; created by the facade, run by the worker."""

    __slots__ = ("kind", "sql", "params", "fn", "args", "kwargs", "future", "seq",
                 "priority", "enqueued", "answer", "value", "error", "report",
                 "_answered", "_start", "_done", "_claimed", "_final")

    kind: Kind
    sql: str | None  # EXECUTE, EXECUTEMANY
    params: Any
    fn: Callable[..., Any] | None  # TRANSACTION, EXCLUSIVE
    args: tuple[Any, ...]
    kwargs: dict[str, Any] | None
    seq: int
    priority: int  # the queue lane (0: interactive)
    enqueued: float  # time.monotonic() when made
    answer: Answer
    value: Any  # the worker's working outcome (see the module docstring)
    error: BaseException | None
    report: Callable[[Request, BaseException], None] | None  # POST: where a failure goes
    future: GatewayFuture | None  # FUTURE only
    _answered: _thread.LockType | None  # WAIT only
    _start: _thread.LockType | None  # WAIT only
    _done: _thread.LockType | None  # WAIT and POST
    _claimed: bool | None
    _final: tuple[Any, BaseException | None] | None

    # No __init__: a request is made by the constructor of its answer mode,
    # :meth:`waiting`, :meth:`submitted` or :meth:`posted`, each on
    # :func:`_blank`: positional, no keyword matching. A keyword ``__init__``
    # cost about twice as much (timeit, load average 2.2: a post's request
    # 0.66 us through it, 0.36 through posted()).

    @staticmethod
    def waiting(kind: Kind, sql: str | None = None, params: Any = None,
                fn: Callable[..., Any] | None = None, args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None, lane: int = 0) -> Request:
        """A WAIT request: its caller blocks on :meth:`wait` (the synchronous calls)."""
        request = _blank(kind, sql, params, fn, args, kwargs, lane, WAIT)
        # A one-shot token for the answer: the worker and the watchdog may
        # answer at the same moment (a stuck worker that returns late), and
        # Lock.acquire(False) is atomic, so exactly one of them does.
        request._done = _new_lock()
        # The same kind of token for the start: whoever takes it first decides
        # whether the request runs (the worker's claim) or never runs (the
        # caller giving up at its timeout).
        request._start = _new_lock()
        # Held until the answer is set: the waiting caller blocks on it, the
        # cheapest wake-up in CPython (a thread ping-pong measured 48 us with
        # Future.result(), 34 us with a bare lock, on the 2-core build machine).
        request._answered = answered = _new_lock()
        answered.acquire()
        return request

    @staticmethod
    def submitted(kind: Kind, sql: str | None = None, params: Any = None,
                  fn: Callable[..., Any] | None = None, args: tuple[Any, ...] = (),
                  kwargs: dict[str, Any] | None = None, lane: int = 0) -> Request:
        """A FUTURE request: answered through its :class:`GatewayFuture`
        (``submit``, the asyncio door, reader threads)."""
        request = _blank(kind, sql, params, fn, args, kwargs, lane, FUTURE)
        request.future = GatewayFuture()
        request._done = request._start = request._answered = None
        return request

    @staticmethod
    def posted(sql: str, params: Params, lane: int,
               report: Callable[[Request, BaseException], None]) -> Request:
        """A POST request (``post``): one statement nobody waits for or can
        cancel; a failure goes to ``report``."""
        request = _blank(_EXECUTE, sql, params, None, (), None, lane, POST)
        request.report = report
        request._done = _new_lock()  # the answer's one-shot token (see waiting())
        request._start = request._answered = None
        return request

    @property
    def done(self) -> bool:
        if self.future is not None:
            return self.future.done()
        assert self._done is not None
        return self._done.locked()

    def set_result(self, value: Any) -> None:
        """Answer the request; a no-op if it was answered already (first wins)."""
        future = self.future
        if future is not None:
            try:
                future.set_result(value)
            except InvalidStateError:
                pass
            return
        self._finish(value, None)

    def set_exception(self, exc: BaseException) -> None:
        """Answer the request with an error; a no-op if it was answered already."""
        future = self.future
        if future is not None:
            try:
                future.set_exception(exc)
            except InvalidStateError:
                pass
            return
        if self._finish(None, exc) and self.report is not None:
            self.report(self, exc)

    def settle(self) -> None:
        """Answer with the outcome the worker kept on the request (``value``,
        ``error``), after its COMMIT; a no-op if it was answered already.

        The worker's answer. A WAIT request's value stays where it is (no
        ``_final``): the first to take ``_done`` answers, and the caller reads
        ``value``/``error`` in place.
        """
        error = self.error
        if error is not None:
            self.set_exception(error)
            return
        done = self._done
        if done is None:  # FUTURE
            self.set_result(self.value)
        elif done.acquire(False) and self._answered is not None:  # WAIT (POST: nobody waits)
            self._answered.release()

    def _finish(self, value: Any, error: BaseException | None) -> bool:
        assert self._done is not None
        if not self._done.acquire(False):
            return False
        self._final = (value, error)
        if self._answered is not None:
            self._answered.release()
        return True

    def claim(self) -> bool:
        """Mark the request running; False if its caller gave it up first.

        Only the first call decides; later calls, for a re-run, repeat that
        answer. If another thread claimed it at the same moment (the watchdog
        failing a stuck worker's batch), that thread owns it: False here.
        """
        claimed = self._claimed
        if claimed is None:
            if self.future is not None:
                claimed = self.future._start_token.acquire(False)
            else:
                claimed = self._start is None or self._start.acquire(False)
            self._claimed = claimed
        return claimed

    def cancel(self) -> bool:
        """Give the request up; True if it had not started (it will never run)."""
        if self.future is not None:
            return self.future.cancel()
        return self._start is not None and self._start.acquire(False)

    def wait(self, timeout: float | None,
             interrupt: Callable[[Request], bool] | None = None) -> Any:
        """Wait for a WAIT request's answer in the caller's thread; return or raise it.

        Args:
            timeout: seconds (already checked: finite and >= 0), or None.
            interrupt: called with the request when the wait times out after it
                had started; True if it stopped the request's running SQL.

        Raises:
            RequestTimeout: no answer within ``timeout`` (see :meth:`timed_out`).
            BaseException: what the request raised, the same object.
        """
        answered = self._answered
        assert answered is not None
        if not answered.acquire(True, -1 if timeout is None else timeout):
            if self.give_up(timeout, interrupt):
                answered.acquire(True, INTERRUPT_GRACE)
            return self.verdict(timeout)
        return self.outcome()

    def outcome(self) -> Any:
        """The answer of a request that is answered: return its value or raise its error.

        Only the answer is read: a worker that returns after the watchdog
        answered writes its working fields, never the answer.
        """
        future = self.future
        if future is not None:
            return future.result(0)
        final = self._final
        if final is None:  # the worker's own answer (its fast path)
            value, error = self.value, self.error
        else:
            value, error = final
            self._final = None
        if error is not None:
            self.error = None  # the caller's traceback must not keep the request alive
            try:
                raise error
            finally:
                del error
        return value

    def give_up(self, timeout: float | None,
                interrupt: Callable[[Request], bool] | None = None) -> bool:
        """The rule when a caller's wait ends without an answer, in every door (1 of 2).

        If the request has not started, it is given up: it never runs
        (RequestTimeout, ``started`` False). Else ``interrupt(request)`` may
        stop its running SQL: then True, and the caller waits up to
        :data:`INTERRUPT_GRACE` for the answer (its own way) before
        :meth:`verdict`, because an interrupt can miss (a statement that was
        just finishing, the next statement of a script) and only the answer
        says whether it hit.

        Raises:
            RequestTimeout: the request had not started and never will.
        """
        if self.cancel():
            raise RequestTimeout(timeout or 0.0, started=False)
        return not self.done and interrupt is not None and interrupt(self)

    def verdict(self, timeout: float | None, writes: bool = True) -> Any:
        """The rule when a caller's wait ends without an answer (2 of 2).

        Answered meanwhile: that answer (a value means committed: late, but
        true), except that ``apsw.InterruptError`` becomes RequestTimeout with
        ``interrupted`` True: stopped, nothing of it committed. Not answered:
        RequestTimeout with ``started`` (``writes``: False for a read, which
        has nothing that could commit): it may still commit.
        """
        if self.done:
            try:
                return self.outcome()
            except apsw.InterruptError:
                raise RequestTimeout(timeout or 0.0, True, True) from None
        raise RequestTimeout(timeout or 0.0, writes)

    def timed_out(self, timeout: float | None,
                  interrupt: Callable[[Request], bool] | None = None,
                  writes: bool = True) -> Any:
        """:meth:`give_up` then :meth:`verdict`, for a caller that may block
        (up to :data:`INTERRUPT_GRACE`) for the answer after an interrupt."""
        if self.give_up(timeout, interrupt):
            wait_answered(self, INTERRUPT_GRACE)
        return self.verdict(timeout, writes)

    def cancel_note(self, interrupt: Callable[[Request], bool] | None = None) -> str:
        """Give up the request for a caller that was cancelled (an asyncio
        task); return what became of it, for a note on the CancelledError."""
        if self.cancel():
            return "sqlite_gateway: cancelled before the request started; it will not run"
        if self.done:
            future = self.future
            failed = (future.exception() is not None if future is not None
                      else (self._final or (None, self.error))[1] is not None)
            outcome = "it failed" if failed else "it was committed"
            return f"sqlite_gateway: cancelled after the request had finished; {outcome}"
        if interrupt is not None and interrupt(self):
            # A cancelled task cannot wait for the outcome as a timed-out caller does,
            # and an interrupt that lands as the statement finishes stops nothing.
            return ("sqlite_gateway: cancelled while the request ran; its running statement "
                    "was interrupted, but it may still commit")
        return "sqlite_gateway: cancelled after the request started; it may still commit"

    def __repr__(self) -> str:
        what = self.sql if self.fn is None else getattr(self.fn, "__qualname__", self.fn)
        return f"<Request #{self.seq} {self.kind.value} {what!r}>"


_new = object.__new__
_monotonic = time.monotonic
_EXECUTE = Kind.EXECUTE


def _blank(kind: Kind, sql: str | None, params: Any, fn: Callable[..., Any] | None,
           args: tuple[Any, ...], kwargs: dict[str, Any] | None, lane: int,
           answer: Answer) -> Request:
    """The fields every request has; its constructor adds its answer mode's."""
    request: Request = _new(Request)
    request.kind, request.sql, request.params = kind, sql, params
    request.fn, request.args, request.kwargs = fn, args, kwargs
    request.seq = 0  # given by the queue when the request is accepted
    request.priority, request.enqueued, request.answer = lane, _monotonic(), answer
    request.value = request.error = request.report = request.future = None
    # (value, error) given by _finish(): the answer when it won the _done
    # token; None when the worker answered from value/error in place.
    request._claimed = request._final = None
    return request


INTERRUPT_GRACE = 0.5
"""Seconds a caller that interrupted its request's SQL at its timeout waits for
the answer, which says whether the interrupt hit (then nothing committed)."""


def wait_answered(request: Request, timeout: float) -> bool:
    """Block up to ``timeout`` for ``request``'s answer; True once it is answered."""
    future = request.future
    if future is not None:
        return bool(futures_wait((future,), timeout).done)
    answered = request._answered
    return answered is None or answered.acquire(True, timeout)


def wait_for(request: Request, timeout: float | None,
             interrupt: Callable[[Request], bool] | None = None) -> Any:
    """Wait for ``request``'s answer (any answer mode but POST); return or raise it.

    See :meth:`Request.wait`; a FUTURE request is waited for on its Future.
    """
    future = request.future
    if future is None:
        return request.wait(timeout, interrupt)
    try:
        return future.result(timeout)
    except FutureTimeout:  # the builtin TimeoutError from 3.11 on, its own class on 3.10
        if not future.done():
            return request.timed_out(timeout, interrupt)
    return future.result(0)


class _Marker:
    """A named singleton that travels in the queue (readable in logs)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


STOP = _Marker("STOP")
"""Returned by the queue once it is closed and empty: the worker exits."""
