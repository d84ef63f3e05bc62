"""Write blocks: an interactive transaction that holds the writer while the caller's code runs.

::

    with db.writer() as w:
        balance = w.execute("SELECT balance FROM wallets WHERE id = ?", (7,)).scalar()
        w.execute("UPDATE wallets SET balance = ? WHERE id = ?", (balance - 5, 7))
    # here the block is committed (durable with synchronous="FULL")

How it works: the block is one TRANSACTION request on the queue, as
``db.transaction(fn)`` makes, whose fn (:meth:`WriteBlock._hold`) runs on the
writer inside the batch it joins: it hands the fn's conn handle to the
holder's thread and waits. The holder's statements run in its own thread, on
that handle, directly: no thread hand-off per statement. When the holder
leaves the ``with``, the fn returns (or raises, to roll the block back) and
the batch goes on and commits; ``__exit__`` returns once that COMMIT has.
So the block shares its batch's COMMIT with the requests around it.

Never two threads on the connection at once, by construction: the writer's
thread is parked in ``_hold`` on the block's condition while the holder uses
the connection; every statement of the block holds the block's statement
lock while it runs, and ``_hold`` takes that lock (and keeps it) before the
writer goes on, interrupting a running statement first when the hold limit
passes. After that no statement of the block can start.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import apsw

from .arguments import Params
from .errors import GatewayError, RequestTimeout, WriteBlockExpired
from .request import Kind, Request
from .result import Result
from .savepoint import Savepoint

if TYPE_CHECKING:
    from .connection import Connection
    from .stats import Stats
    from .worker import Worker


_INTERRUPT_EVERY = 0.05  # seconds between interrupts of a statement running past the hold


class _Phase(enum.Enum):
    NEW = "not entered"
    WAITING = "waiting for the writer"
    HELD = "held"
    COMMIT = "committing"  # the holder left the with normally
    ROLLBACK = "rolling back"  # the holder left it with an exception
    EXPIRED = "expired"  # the hold limit passed: rolled back
    ABANDONED = "abandoned"  # the holder stopped waiting for the writer
    DONE = "ended"


class _RolledBack(Exception):
    """The fn's way to roll its block back (the holder's exception is the real one)."""


class WriteBlock:
    """An interactive transaction on the writer: ``with db.writer() as w:``.

    Made by :meth:`Gateway.writer() <sqlite_gateway.Gateway.writer>`; entered
    once. ``w`` offers :meth:`execute`, :meth:`executemany` and
    :meth:`savepoint`, like a transaction fn's ``conn``; reads on it see the
    block's own writes. Use it from one thread at a time (a second thread's
    statement while one runs is refused), and only inside the ``with``.

    Entering waits (up to the call's ``timeout``) until the block holds the
    writer. Leaving commits the block with the batch it ran in and returns
    once that COMMIT has returned; leaving with an exception rolls the block
    back and lets the exception go on. Past ``hold_limit`` seconds of holding,
    the block is rolled back: its next statement, or its exit, raises
    :class:`~sqlite_gateway.WriteBlockExpired`.

    While a thread holds a block, its calls on the same gateway that need
    the writer (``execute`` of a write, ``transaction``, ``submit``,
    ``post``, ``flush``, another ``writer()``...) raise
    :class:`~sqlite_gateway.NestedCallError` at once: they would wait for the
    block itself. ``db.execute`` of a read is served by a reader, as for any
    other thread: it sees the last commit, not the block's own writes (read
    those on ``w``).
    """

    __slots__ = ("_enqueue", "_worker", "_stats", "_timeout", "_lane", "_limit", "_cond",
                 "_phase", "_statement", "_handle", "_request", "_calls", "_owner", "on_held")

    def __init__(self, enqueue: Callable[[Request], None], worker: Worker, stats: Stats,
                 timeout: float | None, lane: int, limit: float) -> None:
        self._enqueue = enqueue
        self._worker = worker
        self._stats = stats
        self._timeout = timeout
        self._lane = lane
        self._limit = limit
        # Guards changes of _phase and _handle; the writer's thread waits on it in _hold.
        self._cond = threading.Condition(threading.Lock())
        self._phase = _Phase.NEW
        # Held by whichever thread runs one of the block's statements; taken for
        # good by _hold when the hold ends, so no statement starts after that.
        self._statement = threading.Lock()
        self._handle: Connection | None = None
        self._request: Request | None = None
        self._calls = 0  # times the writer called _hold (2: its batch was re-run)
        self._owner: int | None = None
        # Called on the writer's thread once the block holds it (the asyncio
        # form wakes its loop with it); must be quick and must not raise.
        self.on_held: Callable[[], object] | None = None

    # -- the holder's side ----------------------------------------------------

    def __enter__(self) -> WriteBlock:
        """Wait until the block holds the writer; return the block.

        Raises:
            RequestTimeout: the writer was not free within ``timeout``
                (nothing of the block ran; it never will).
            NestedCallError: called inside a transaction fn, or by a thread
                that holds a write block on this gateway already.
            GatewayClosed, Overloaded: refused at once (or closed while waiting).
            GatewayError: the block was entered already.
        """
        future = self._begin(threading.get_ident())
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._cond:
                while self._phase is _Phase.WAITING and not future.done():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(remaining)
        except BaseException:  # Ctrl-C while waiting: never hold the writer for nobody
            self._abandon()
            raise
        self._entered()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        """Commit the block with its batch (or roll it back); return once done.

        Raises:
            WriteBlockExpired: the hold limit passed (the block was rolled back).
            apsw.Error, GatewayError: the batch's COMMIT failed, or the batch
                was rolled back as a whole by another request: nothing of the
                block was kept.
            RequestTimeout: no answer within ``timeout`` after leaving; the
                block may still commit.
        An exception raised in the ``with`` body always goes on unchanged.
        """
        future = self._leave(exc is not None)
        done, _ = wait_futures([future], self._timeout)
        return self._outcome(bool(done), exc)

    # The steps of entering and leaving, shared with the asyncio form
    # (sqlite_gateway.integrations.asyncblock), which waits its own way.

    def _begin(self, owner: int | None) -> Future[Any]:
        """Enqueue the block's request; its future. ``owner``: the thread whose
        gateway calls are refused while it holds the block (None: none)."""
        if self._phase is not _Phase.NEW:
            raise GatewayError("a write block is entered once: call db.writer() again "
                               "for another")
        request = Request.submitted(Kind.TRANSACTION, None, None, self._hold, (), None,
                                    self._lane)
        future = request.future
        assert future is not None
        self._owner = owner
        self._request = request
        self._phase = _Phase.WAITING
        future.add_done_callback(self._wake)
        try:
            self._enqueue(request)
        except BaseException:
            self._phase = _Phase.DONE
            raise
        return future

    def _abandon(self) -> None:
        """The holder stops waiting (timeout, Ctrl-C, a cancelled task): the
        request never runs, or, if it holds the writer already, rolls back."""
        with self._cond:
            if self._phase is _Phase.WAITING:
                self._phase = _Phase.ABANDONED  # if the writer reaches it, _hold lets go
            elif self._phase is _Phase.HELD:
                self._phase = _Phase.ROLLBACK
                self._let_go()
        assert self._request is not None
        self._request.cancel()

    def _entered(self) -> None:
        """After the wait for the writer: return if held, else raise why not."""
        request = self._request
        assert request is not None and request.future is not None
        if self._phase is _Phase.HELD:
            return
        if not request.future.done():
            # Not held in time. If it is held at this very moment, _abandon rolls
            # it back: either way nothing of the block runs or is kept.
            self._abandon()
            raise RequestTimeout(self._timeout or 0.0, started=False)
        self._phase = _Phase.DONE  # answered without ever holding: refused or closed
        error = request.future.exception(0)
        raise error if error is not None else GatewayError("the write block's request "
                                                           "ended without holding the writer")

    def _leave(self, failed: bool) -> Future[Any]:
        """The holder leaves: commit (or, ``failed``, roll back); the request's future."""
        request = self._request
        if request is None or request.future is None:
            raise GatewayError("this write block was never entered")
        with self._cond:
            if self._phase is _Phase.HELD:
                self._phase = _Phase.ROLLBACK if failed else _Phase.COMMIT
                self._let_go()
        return request.future

    def _let_go(self) -> None:
        """The holder has left (under ``_cond``, the block HELD until now): wake the
        writer, and stop refusing the holder's thread at once. It may call the
        gateway before the writer wakes (its exit's wait timed out, say); those
        calls queue behind this block, which no longer waits for that thread."""
        if self._worker.holder_ident == self._owner:
            self._worker.holder_ident = None
        self._cond.notify_all()

    def _outcome(self, done: bool, exc: BaseException | None) -> Literal[False]:
        """After the wait for the answer: return, or raise what the block's caller
        must hear (never over ``exc``, the body's own exception)."""
        if not done:
            if exc is not None:
                return False  # it is being rolled back; the body's error says more
            raise RequestTimeout(self._timeout or 0.0, started=True)
        future = self._request.future  # type: ignore[union-attr]
        assert future is not None
        error = None if future.cancelled() else future.exception()
        with self._cond:
            if self._phase is not _Phase.EXPIRED:
                self._phase = _Phase.DONE
        if error is None or exc is not None or isinstance(error, _RolledBack):
            return False
        raise error

    def _wake(self, _future: Future[Any]) -> None:
        """The request was answered (on the answering thread): wake the holder."""
        with self._cond:
            self._cond.notify_all()

    # -- statements -----------------------------------------------------------

    def execute(self, sql: str, params: Params = ()) -> Result:
        """Run ``sql`` inside the block, in the calling thread; as ``conn.execute``.

        Raises:
            WriteBlockExpired: the hold limit passed (the block is rolled back).
            GatewayError: the block is not held (not entered, or ended), or
                another thread is running a statement on it now.
            apsw.Error, TransactionControlError, ...: as ``conn.execute``.
        """
        handle = self._use()
        try:
            return handle.execute(sql, params)
        except apsw.InterruptError:
            self._raise_if_expired()
            raise
        finally:
            self._unuse()

    def executemany(self, sql: str, seq_of_params: Sequence[Params]) -> Result:
        """Run one statement per parameter set inside the block; as ``conn.executemany``."""
        handle = self._use()
        try:
            return handle.executemany(sql, seq_of_params)
        except apsw.InterruptError:
            self._raise_if_expired()
            raise
        finally:
            self._unuse()

    def savepoint(self) -> _BlockSavepoint:
        """A nested unit inside the block (``with w.savepoint():``); see
        :meth:`Connection.savepoint <sqlite_gateway.Connection.savepoint>`."""
        handle = self._use()
        try:
            return _BlockSavepoint(self, handle.savepoint())
        finally:
            self._unuse()

    @property
    def held(self) -> bool:
        """True while the block holds the writer (not yet ended nor expired)."""
        return self._phase is _Phase.HELD

    def _use(self) -> Connection:
        """Take the statement lock for one statement; the write handle."""
        statement = self._statement
        if statement.acquire(False):
            handle = self._handle
            if self._phase is _Phase.HELD and handle is not None:
                return handle
            statement.release()
            self._refuse()
        if self._phase is _Phase.HELD:
            raise GatewayError("another thread is running a statement on this write "
                               "block now: use a block from one thread at a time")
        self._refuse()
        raise AssertionError("unreachable")  # pragma: no cover

    def _unuse(self) -> None:
        self._statement.release()

    def _refuse(self) -> NoReturn:
        phase = self._phase
        if phase is _Phase.EXPIRED:
            raise WriteBlockExpired(self._limit)
        if phase in (_Phase.NEW, _Phase.WAITING, _Phase.ABANDONED):
            raise GatewayError("this write block does not hold the writer: use it inside "
                               "'with db.writer() as w:'")
        raise GatewayError("this write block has ended (its 'with' was left); use it only "
                           "inside the 'with'")

    def _raise_if_expired(self) -> None:
        if self._phase is _Phase.EXPIRED:
            raise WriteBlockExpired(self._limit) from None

    # -- the writer's side ------------------------------------------------------

    def _hold(self, handle: Connection) -> None:
        """The block's transaction fn, on the writer: lend ``handle`` to the holder
        and wait until the holder is done or the hold limit passes."""
        worker = self._worker
        with self._cond:
            self._calls += 1
            if self._calls > 1:
                raise GatewayError(
                    "the batch this write block ran in was rolled back as a whole by another "
                    "request (INSERT OR ROLLBACK, RAISE(ROLLBACK), or a failed statement that "
                    "kept rows); the block's writes were undone with it: run the block again")
            if self._phase is not _Phase.WAITING:
                raise _RolledBack  # the holder stopped waiting: nothing to do
            self._handle = handle
            self._phase = _Phase.HELD
            held_at = time.monotonic()
            deadline = held_at + self._limit
            worker.holder_ident = self._owner
            self._cond.notify_all()
            if self.on_held is not None:
                self.on_held()
            try:
                while self._phase is _Phase.HELD:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._phase = _Phase.EXPIRED
                        break
                    self._cond.wait(remaining)
                phase = self._phase
            finally:
                worker.holder_ident = None
        # Never go on while a statement of the block runs: stop it and wait for
        # it to end. Again and again, because SQLite forgets an interrupt that
        # lands just before a statement starts.
        while not self._statement.acquire(True, _INTERRUPT_EVERY):
            handle._conn.interrupt()
        self._stats.record_block(time.monotonic() - held_at, phase is _Phase.EXPIRED)
        if phase is _Phase.ROLLBACK:
            raise _RolledBack
        if phase is _Phase.EXPIRED:
            raise WriteBlockExpired(self._limit)

    def __repr__(self) -> str:
        return f"<WriteBlock {self._phase.value}>"


class _BlockSavepoint:
    """A :class:`~sqlite_gateway.savepoint.Savepoint` used through a write
    block: each of its statements is one of the block's (held, one at a time)."""

    __slots__ = ("_block", "_savepoint")

    def __init__(self, block: WriteBlock, savepoint: Savepoint) -> None:
        self._block = block
        self._savepoint = savepoint

    def __enter__(self) -> _BlockSavepoint:
        self._block._use()
        try:
            self._savepoint.__enter__()
        finally:
            self._block._unuse()
        return self

    def rollback(self) -> None:
        """Undo the unit's writes so far; it stays open."""
        self._block._use()
        try:
            self._savepoint.rollback()
        finally:
            self._block._unuse()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        self._block._use()
        try:
            return self._savepoint.__exit__(exc_type, exc, tb)
        finally:
            self._block._unuse()
