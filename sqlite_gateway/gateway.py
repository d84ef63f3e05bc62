"""The Gateway facade: runs in the callers' threads.

It checks input, enqueues a :class:`~sqlite_gateway.request.Request`, waits on
that request's own future and re-raises what the worker raised. It never
touches the connection; the :class:`~sqlite_gateway.worker.Worker` does.

Lifecycle (``_state``, guarded by ``_state_lock``)::

    NEW --start()--> RUNNING --close()--> CLOSING --worker drained--> CLOSED
                        |                    |
                        +--worker died, or---+------------------> BROKEN
                           the watchdog gave it up (hang_timeout)

Whether a request is *accepted* is decided by the queue under its own mutex
(closed by ``close()`` or by the dying worker), so no request can slip in
behind the stop.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Literal, TypeVar, Union

import apsw

from .connection import SYNCHRONOUS
from .errors import GatewayClosed, GatewayError, NestedCallError, RequestTimeout
from .failures import FailureLog, PostFailure
from .request import (FUTURE, WAIT, Kind, Params, Request, capture_params, check_many,
                      check_params, check_priority, check_sql, check_timeout, new_future,
                      new_post)
from .requestqueue import RequestQueue, fail_pending
from .readers import ReaderLanes, ReaderPool
from .result import Result
from .stats import Stats
from .watchdog import Watchdog
from .worker import Worker

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Default(enum.Enum):
    DEFAULT = "the gateway's timeout"


DEFAULT = _Default.DEFAULT
Timeout = Union[float, None, Literal[_Default.DEFAULT]]


class State(enum.Enum):
    NEW = "new"  # constructed: no thread, no connection yet
    RUNNING = "running"  # the worker accepts and runs requests
    CLOSING = "closing"  # close() called: nothing new accepted, the worker drains
    CLOSED = "closed"  # the worker has stopped and closed its connection; final
    BROKEN = "broken"  # the worker died or hung; every call fails with its reason; final


_RUNNING = State.RUNNING
_SQL_KINDS = (Kind.EXECUTE, Kind.EXECUTEMANY)  # requests that are SQL only
_WRITES_MEMO = 4096  # SQL texts SQLite judged writes (cleared when full)
# Signals (Ctrl-C) are delivered to the main thread: it never runs the
# writer's own steps in place, so a KeyboardInterrupt cannot land in a COMMIT.
_MAIN_THREAD = threading.main_thread().ident
_EXIT_CLOSE_TIMEOUT = 30.0  # how long the exit hook waits for one gateway to drain
_open_gateways: weakref.WeakSet[Gateway] = weakref.WeakSet()


class Gateway:
    """A single-writer gateway to one SQLite database file.

    Every method is thread-safe. Calls that return a :class:`Result` (or a
    fn's value) return only after the data is committed; with the default
    ``synchronous="FULL"`` a returned call survives a crash or power loss.

    Args:
        path: the database file (created if missing). ``:memory:`` is refused:
            the gateway needs WAL, which needs a file; so are URI file names
            (``file:...``): the gateway opens its connections in the modes it needs.
        queue_size: most requests waiting at once; past it calls raise
            :class:`Overloaded` at once.
        batch_max: most requests committed together in one transaction.
        timeout: default seconds a caller waits for its answer (None: no
            limit). Each call can override it.
        synchronous: ``"FULL"`` (an answer means durable, even on power loss),
            ``"NORMAL"`` (survives an application crash; the last commits may
            be lost on power loss), ``"OFF"`` or ``"EXTRA"``.
        busy_timeout: seconds the worker waits for a lock held by another
            process before the batch fails with ``apsw.BusyError``.
        inline: when True (the default) and the writer is idle with nothing
            queued, a synchronous write call runs in its caller's thread,
            under the writer's lock, with every step the worker would take:
            no thread hand-off (the main thread never does: Ctrl-C must not
            land in a COMMIT). Under load every call goes through the worker.
            A transaction fn run in place delays only its own caller if it
            keeps running Python past its timeout; its SQL is still stopped
            at the deadline.
        autocheckpoint: the writer's ``wal_autocheckpoint``: after a commit
            that leaves at least this many pages in the WAL, the writer runs a
            PASSIVE checkpoint (SQLite's default, 1000). 0 switches it off:
            use 0 beside Litestream, which then owns checkpointing (and the
            WAL grows until something checkpoints).
        readers: the most read-only connections that serve ``execute()``
            calls whose statements cannot write (as SQLite judges them),
            beside the writer; opened as needed, shared by every thread.
            0 sends every statement through the one writer.
        read_mode: ``"inline"`` (a thread takes a free reader, reads in
            place, no hand-off, and gives it back; with more threads reading
            at once than ``readers``, the others wait for a free one) or
            ``"threads"`` (``readers`` threads, each owning a connection,
            fed by a queue: for callers that must not block).
        vfs: the name of a registered SQLite VFS for every connection the
            gateway opens (None: SQLite's default).
        hang_timeout: seconds one step of the worker (a statement, a
            transaction or exclusive fn, a COMMIT) may run. Past it the
            running SQL is interrupted (the request fails with
            ``apsw.InterruptError``); if the step still has not ended about a
            second later (a Python fn that never returns), the gateway is
            broken: every waiting and later call raises GatewayClosed, and
            the stuck thread keeps the write lock until the process exits.
            A read on a reader is stopped the same way past it.
            Must exceed ``busy_timeout``; None: no watchdog.
        background_slice: seconds background work may hold the writer at a
            time: a background batch takes no more requests once it has run
            that long, and :meth:`bulk` cuts its rows into requests of about
            that length. Interactive work waits at most about this long
            behind background work.

    Priorities: every write call takes ``priority="interactive"`` (the
    default: web handlers) or ``"background"`` (helpers' bulk jobs).
    Interactive requests go first; within one priority requests run in the
    order they were accepted; :meth:`flush` still waits for everything
    accepted before it, of both priorities. Background work is never starved
    for long: a background request that has waited about a second is served
    next.

    Processes: a gateway serves the process that started it. In a child
    forked after ``start()`` its calls raise :class:`GatewayClosed` at once:
    make (or start) the gateway after the fork, e.g. in gunicorn's
    ``post_fork`` hook or lazily in the app factory.

    Raises:
        ValueError, TypeError: an option is out of range or of the wrong type.
    """

    def __init__(self, path: str | os.PathLike[str], *, queue_size: int = 10_000,
                 batch_max: int = 256, timeout: float | None = 30.0,
                 synchronous: str = "FULL", busy_timeout: float = 5.0, readers: int = 8,
                 read_mode: str = "inline", vfs: str | None = None,
                 hang_timeout: float | None = 60.0, background_slice: float = 0.01,
                 autocheckpoint: int = 1000, inline: bool = True) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path or path == ":memory:":
            raise ValueError(f"path must name a database file, not {path!r} "
                             "(the gateway needs WAL, which needs a file)")
        if path[:5].lower() == "file:":
            # SQLite would take it as a file name, not a URI: a file named
            # "file:x.db?mode=ro" would be created (and the writer cannot be read-only).
            raise ValueError(f"URI file names are not supported, not {path!r}: pass a plain "
                             "path (the gateway opens the writer read-write and its readers "
                             "read-only itself); for a file whose name starts with 'file:', "
                             "write './file:...'")
        _check_int("queue_size", queue_size)
        _check_int("batch_max", batch_max)
        if timeout is not None:
            _check_seconds("timeout", timeout)
        _check_seconds("busy_timeout", busy_timeout, zero_ok=True)
        _check_seconds("background_slice", background_slice)
        if not isinstance(readers, int) or isinstance(readers, bool) or readers < 0:
            raise ValueError(f"readers must be a whole number >= 0, not {readers!r}")
        if (not isinstance(autocheckpoint, int) or isinstance(autocheckpoint, bool)
                or autocheckpoint < 0):
            raise ValueError("autocheckpoint must be a whole number of WAL pages >= 0 "
                             f"(0: off), not {autocheckpoint!r}")
        if not isinstance(inline, bool):
            raise ValueError(f"inline must be True or False, not {inline!r}")
        if read_mode not in ("inline", "threads"):
            raise ValueError(f"read_mode must be 'inline' or 'threads', not {read_mode!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, "
                             f"not {synchronous!r}")
        if vfs is not None and (not isinstance(vfs, str) or vfs not in apsw.vfs_names()):
            raise ValueError(f"vfs must name a registered SQLite VFS "
                             f"({', '.join(apsw.vfs_names())}), not {vfs!r}")
        if hang_timeout is not None:
            _check_seconds("hang_timeout", hang_timeout)
            if hang_timeout <= busy_timeout:
                raise ValueError(f"hang_timeout ({hang_timeout!r} s) must exceed busy_timeout "
                                 f"({busy_timeout!r} s): waiting for a lock is not a hang")
        self.path = path
        self.timeout = timeout
        self.inline = inline
        self.background_slice = float(background_slice)
        self._queue = RequestQueue(queue_size)
        self._stats = Stats()
        self._failures = FailureLog()
        self._report = self._failures.report
        self._worker = Worker(path, self._queue, self._stats, batch_max=batch_max,
                              synchronous=synchronous.upper(), busy_timeout=busy_timeout,
                              vfs=vfs, background_slice=self.background_slice,
                              autocheckpoint=autocheckpoint)
        self._watchdog = None if hang_timeout is None else Watchdog(
            self._worker, hang_timeout, f"sqlite-gateway-watchdog:{os.path.basename(path)}")
        # _state_lock is held while reading-then-changing _state and _thread
        # (start and close); request acceptance is the queue's own mutex.
        self._state_lock = threading.Lock()
        self._state = State.NEW
        self._thread: threading.Thread | None = None
        self._readers: ReaderPool | ReaderLanes | None = None
        # SQL texts SQLite judged writes on a reader: sent straight to the
        # writer from then on (set operations are atomic).
        self._writes: set[str] = set()
        if readers and read_mode == "inline":
            self._readers = ReaderPool(path, readers, busy_timeout, vfs, hang_timeout)
        elif readers:
            self._readers = ReaderLanes(path, readers, busy_timeout, queue_size, vfs,
                                        hang_timeout)

    # -- lifecycle ------------------------------------------------------------

    @property
    def state(self) -> State:
        """The lifecycle state (a snapshot)."""
        if self._worker.death is not None:
            return State.BROKEN
        return self._state

    def start(self) -> Gateway:
        """Start the worker and open the write connection; return self.

        Returns once the connection is open and configured (WAL, synchronous,
        foreign keys, busy timeout). If another process holds the file's lock
        that can take up to ``busy_timeout``; Ctrl-C (KeyboardInterrupt) stops
        the wait at once and leaves the gateway closed.

        Raises:
            GatewayError: already started or closed (a closed gateway stays
                closed; make a new one on the same file).
            apsw.Error: the file could not be opened or configured.
        """
        with self._state_lock:
            if self._state is not State.NEW:
                raise GatewayError(f"gateway is {self.state.value}; it can be started once "
                                   "(to restart, make a new Gateway on the same file)")
            thread = threading.Thread(target=self._worker.run, daemon=True,
                                      name=f"sqlite-gateway-writer:{os.path.basename(self.path)}")
            # Daemon, so the interpreter reaches atexit, where _close_at_exit
            # drains it; an explicit close() is still the proper way.
            self._thread = thread
            thread.start()
            try:
                self._worker.ready.result()  # bounded by the busy timeout
            except BaseException:
                self._state = State.CLOSED
                # If the worker opens after all, the closed queue makes it close
                # its connection and end.
                self._queue.close("gateway is closed: start() did not complete")
                if self._worker.ready.done():
                    thread.join()  # it is ending (it failed to open, or will stop now)
                # Otherwise this is Ctrl-C (or another signal's exception) while the
                # worker waits for a lock another process holds: return at once and
                # leave the daemon thread to the busy timeout, not the caller.
                raise
            if isinstance(self._readers, ReaderLanes):
                self._readers.start()  # after the writer has put the file in WAL mode
            if self._watchdog is not None:
                self._watchdog.start()
            self._state = State.RUNNING
            _open_gateways.add(self)
            # If the gateway is dropped without close(), let the worker finish and exit.
            self._finalizer = weakref.finalize(self, self._queue.close, "gateway was collected")
            self._finalizer.atexit = False
        logger.info("gateway started on %s", self.path)
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, commit everything already queued, stop the worker.

        Idempotent and thread-safe; calls after it raise :class:`GatewayClosed`.
        Returns when the worker has stopped, or after ``timeout`` seconds; in
        that case (a transaction fn that hangs) the requests still queued are
        answered with :class:`GatewayClosed`, so nobody waits forever. On a
        broken gateway it returns at once: there is nothing left to drain.
        """
        self._check_not_worker("close")
        with self._state_lock:
            if self._state is State.CLOSED:
                # Closed already, or start() failed or was interrupted, or this is
                # a forked child's copy: nothing of ours to drain or wait for.
                return
            if self._state is State.NEW:
                self._state = State.CLOSED
                self._queue.close("gateway is closed")
                return
            if self._state is State.RUNNING:
                self._state = State.CLOSING
                self._queue.close("gateway is closed")
            thread = self._thread
        assert thread is not None
        if self._readers is not None:
            self._readers.close()
        # "stopped" is also set when the worker is given up: a stuck thread
        # is never waited for.
        if self._worker.stopped.wait(timeout) and self._worker.death is None:
            thread.join()  # it has closed its connection and is about to exit
        if self._watchdog is not None:
            self._watchdog.stop()
        if not self._worker.stopped.is_set():
            logger.warning("gateway on %s: worker still busy after %s s; failing queued requests",
                           self.path, timeout)
            fail_pending(self._queue.drain(),
                         lambda: GatewayClosed("gateway closed before this request ran"))
        with self._state_lock:
            if self._state is State.CLOSING:
                self._state = State.CLOSED
                _open_gateways.discard(self)
                logger.info("gateway closed on %s", self.path)

    def _disown(self, reason: str) -> None:
        """In a forked child (one thread, at the fork): refuse every call at once.

        The parent's worker, watchdog and reader threads did not come along,
        and its SQLite connections must not be used here. A lock that one of
        the parent's threads held at the fork stays locked here, so this
        takes none: it swaps in a fresh state lock and an already closed queue.
        """
        self._state_lock = threading.Lock()
        self._state = State.CLOSED
        queue = RequestQueue(1)
        queue.close(reason)
        self._queue = queue
        self._readers = None
        self._finalizer.detach()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Gateway {self.path!r} {self.state.value}>"

    # -- requests ---------------------------------------------------------------

    def execute(self, sql: str, params: Params = (), *, timeout: Timeout = DEFAULT,
                priority: str = "interactive") -> Result:
        """Run ``sql`` (one or more statements) atomically; return once committed.

        With ``readers``, SQL that SQLite judges read-only runs on a reader
        instead (it sees every write acknowledged before the call); anything
        else goes to the writer. Temporary tables live on the writer only:
        use them inside ``transaction()``.

        Raises:
            apsw.Error: SQLite's own error, the same object the worker caught
                (e.g. ``apsw.ConstraintError``); nothing of the call is kept.
            TransactionControlError: ``sql`` holds BEGIN/COMMIT/SAVEPOINT/...
            TypeError, ValueError: ``sql`` or ``params`` of the wrong kind.
            Overloaded, GatewayClosed: refused at once, nothing enqueued.
            RequestTimeout: you stopped waiting. If the request had not
                started it will not run; if it had, it may still commit.
        """
        sql, params = check_sql(sql), check_params(params)
        lane = 0 if priority == "interactive" else check_priority(priority)
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        readers = self._readers
        if readers is not None and sql not in self._writes and self._state is State.RUNNING:
            reason = self._queue.closed_reason
            if reason is not None:
                raise GatewayClosed(reason)
            ident = threading.get_ident()
            if ident == self._worker.thread_ident or ident == self._worker.inline_ident:
                self._check_not_worker("execute")
            result = readers.read(sql, params, wait)
            if result is not None:
                return result
            if len(self._writes) >= _WRITES_MEMO:
                self._writes.clear()
            self._writes.add(sql)  # SQLite judged it a write: next time, straight to the writer
        return self._call(Request(Kind.EXECUTE, sql, params, priority=lane,  # type: ignore[no-any-return]
                                  answer=WAIT), wait)

    def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                    timeout: Timeout = DEFAULT, priority: str = "interactive") -> Result:
        """Run one statement once per parameter set, all atomically (like execute).

        All of it is one request: it holds the writer until done. For a long
        job beside interactive traffic, :meth:`bulk` cuts it into slices.
        """
        lane = check_priority(priority)
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        params = check_many(seq_of_params)  # materialised here, not on the worker
        return self._call(Request(Kind.EXECUTEMANY, check_sql(sql), params,  # type: ignore[no-any-return]
                                  priority=lane, answer=WAIT), wait)

    def transaction(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = DEFAULT,
                    priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` atomically on the worker; return its value.

        ``conn`` offers ``execute`` and ``executemany``. If fn raises, its
        writes are rolled back and the exception is re-raised here. Gateway
        methods called inside fn raise :class:`NestedCallError` (use ``conn``).

        fn may be called a second time if another request of its batch rolled
        back the whole transaction (``INSERT OR ROLLBACK``): keep its side
        effects inside the database. A fn that never returns cannot be
        stopped: its caller gets RequestTimeout and the process needs a restart.
        (``timeout`` and ``priority`` are the gateway's; every other keyword
        goes to fn.)
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        request = Request(Kind.TRANSACTION, fn=fn, args=args, kwargs=kwargs,
                          priority=check_priority(priority), answer=WAIT)
        return self._call(request, wait)  # type: ignore[no-any-return]

    def submit(self, sql: str, params: Params = (), *, priority: str = "interactive",
               block: bool = False, timeout: float | None = None) -> Future[Result]:
        """Write-behind: enqueue ``sql`` and return its future at once.

        Submissions of one priority run in the order they were accepted. The
        future's result is set only after the commit; its exception is
        SQLite's own error. Cancelling the future before the request starts
        stops it from running. ``params`` are copied at the call: changing
        the list or dict afterwards changes nothing.

        Its done-callbacks run on the worker thread as it answers: an error in
        one is logged and goes no further, but one that blocks stalls every
        caller behind it. Keep them short.

        Args:
            block: wait for room instead of raising Overloaded when the queue
                is nearly full, like ``queue.Queue.put(block=True)``. Only for
                ``priority="background"`` producers (importers, helper
                threads): they fill the queue up to 90 %, the rest stays for
                web requests.
            timeout: with ``block``, the longest wait for room (None: no
                limit); then Overloaded.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        lane = 0 if priority == "interactive" and block is False else self._lane_for(
            priority, block, timeout)
        request = new_future(Kind.EXECUTE, check_sql(sql), capture_params(params), lane)
        self._enqueue(request, block, timeout)
        return request.future  # type: ignore[return-value]

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", block: bool = False,
                           timeout: float | None = None, **kwargs: Any) -> Future[T]:
        """Write-behind form of :meth:`transaction`; returns its future at once.

        ``fn``'s arguments are passed as they are (not copied): do not change
        them until the future is done. ``block`` and ``timeout`` are as in
        :meth:`submit` (every other keyword goes to fn).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request(Kind.TRANSACTION, fn=fn, args=args, kwargs=kwargs,
                          priority=self._lane_for(priority, block, timeout), answer=FUTURE)
        self._enqueue(request, block, timeout)
        return request.future  # type: ignore[return-value]

    def post(self, sql: str, params: Params = (), *, priority: str = "interactive",
             block: bool = False, timeout: float | None = None) -> None:
        """Fire-and-forget write-behind: enqueue ``sql`` and return at once, no future.

        For logs that need no answer per row (a page view, an audit row):
        the cheapest write there is. Order is kept with every other call of
        the same priority, and :meth:`flush` covers posted writes as it covers
        submitted ones. A failed post keeps nothing and is never silent: it is
        counted in ``stats()["post_failures"]``, the first after each flush is
        logged at ERROR, and :meth:`failures` returns it. ``flush()`` does not
        raise for it. ``params`` are copied at the call; ``block`` and
        ``timeout`` as in :meth:`submit`.

        Use :meth:`submit` when the caller needs to know that this row
        committed (a bet, a payment); ``post`` when a lost row would only be
        logged, and the next flush is the point where the job checks.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        lane = 0 if priority == "interactive" and block is False else self._lane_for(
            priority, block, timeout)
        request = new_post(check_sql(sql), capture_params(params), lane, self._report)
        if block or self._state is not _RUNNING:
            self._enqueue(request, block, timeout)  # (with the checks a waiting call needs)
        else:
            # No nested-call check: a post made inside a transaction fn is
            # simply run in a later batch; nobody waits for it.
            self._queue.put(request)

    def failures(self) -> list[PostFailure]:
        """Return the :meth:`post` failures since the last call, and forget them.

        Thread-safe; each failure is returned to exactly one caller. At most
        1000 are kept between two calls; the rest are only counted
        (``stats()["post_failures"]``).
        """
        return self._failures.take()

    def flush(self, timeout: Timeout = DEFAULT) -> None:
        """Barrier: return once every request accepted before it is committed or failed.

        Raises:
            RequestTimeout: the barrier was not reached in time (the earlier
                requests are still queued and will still run).
            GatewayClosed: the gateway is closed or broken.
        """
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        self._call(Request(Kind.FLUSH, answer=WAIT), wait)
        self._failures.barrier()

    def run_exclusive(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = DEFAULT,
                      priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(apsw_connection, ...)`` alone, between batches, outside any transaction.

        For maintenance that cannot run inside a transaction: checkpoints,
        VACUUM, ``PRAGMA optimize``, the backup API. fn gets the raw write
        connection for the duration of the call only; do not keep it.
        It may use explicit transactions; one left open is rolled back.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        request = Request(Kind.EXCLUSIVE, fn=fn, args=args, kwargs=kwargs,
                          priority=check_priority(priority), answer=WAIT)
        return self._call(request, wait)  # type: ignore[no-any-return]

    def bulk(self, sql: str, seq_of_params: Iterable[Params], *, timeout: Timeout = DEFAULT,
             priority: str = "background") -> int:
        """Run one statement per parameter set, in slices; return the rows changed.

        For long jobs beside interactive traffic: the rows are cut into
        requests that each hold the writer for about ``background_slice``
        seconds, sent one after another. Each slice is atomic and committed
        on its own; the whole job is not. Returns once the last slice is
        committed. ``timeout`` applies to each slice.

        Raises:
            the first slice's error (the same object, e.g.
            ``apsw.ConstraintError``), with a note saying how many parameter
            sets are known committed before it and what became of that slice:
            rolled back, not accepted, or (the caller stopped waiting: a
            RequestTimeout after it started, Ctrl-C) it may still commit, all
            of it or none. No later slice is sent.
            TypeError, ValueError, Overloaded, GatewayClosed: as executemany.
        """
        rows = check_many(seq_of_params)
        sql, lane = check_sql(sql), check_priority(priority)
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        done = changed = 0
        while done < len(rows):
            request = Request(Kind.TRANSACTION, fn=_run_slice, priority=lane, answer=WAIT,
                              args=(sql, rows, done, self.background_slice,
                                    self._queue.interactive_waiting if lane else None))
            try:
                ran, count = self._call(request, wait)
            except BaseException as exc:
                note = _bulk_note(exc, request, done, len(rows))
                if sys.version_info >= (3, 11):
                    exc.add_note(note)
                else:  # no add_note() before 3.11: the same attribute, by hand
                    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
                raise
            done += ran
            changed += count
        return changed

    def stats(self) -> dict[str, Any]:
        """Figures since start: queued now, requests, errors, batches, commits,
        batch_mean, batch_max, latency p50/p99/max in ms (wait + run, over the
        most recent requests). Approximate: a snapshot taken while work goes on."""
        figures = self._stats.snapshot(len(self._queue))
        figures["post_failures"] = self._failures.total
        figures["state"] = self.state.value
        figures["reads"] = self._readers.reads if self._readers else 0
        figures["reads_to_writer"] = self._readers.to_writer if self._readers else 0
        return figures

    def _submit_request(self, kind: Kind, sql: str | None = None, params: Any = None, *,
                        fn: Callable[..., Any] | None = None, args: tuple[Any, ...] = (),
                        kwargs: dict[str, Any] | None = None,
                        priority: str = "interactive") -> tuple[Future[Any], Callable[[], bool]]:
        """Enqueue one writer request of ``kind``; return at once (for callers that
        wait their own way, e.g. on an event loop).

        Input is checked as the public method of that kind checks it (``params``
        is the parameter sets for EXECUTEMANY; EXECUTE params are copied, as for
        write-behind). Reads are not routed to readers.

        Returns:
            The request's future (cancel it before the request starts and it
            never runs), and ``stop()``: stops the request's running SQL for
            EXECUTE/EXECUTEMANY (True if it was running), else returns False.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        lane = check_priority(priority)
        if kind is Kind.EXECUTE:
            # The caller goes on before the worker runs it: copy, as write-behind calls must.
            sql, params = check_sql(sql), capture_params(params)
        elif kind is Kind.EXECUTEMANY:
            params = check_many(params)
            sql = check_sql(sql)
        elif kind is not Kind.FLUSH and not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request(kind, sql, params, fn=fn, args=args, kwargs=kwargs, priority=lane,
                          answer=FUTURE)
        self._enqueue(request)
        worker, future = self._worker, request.future
        assert future is not None
        if kind in _SQL_KINDS:
            return future, lambda: worker.interrupt(request)
        return future, lambda: False

    # -- plumbing ---------------------------------------------------------------

    def _check_not_worker(self, what: str) -> None:
        ident = threading.get_ident()
        if ident == self._worker.thread_ident or ident == self._worker.inline_ident:
            raise NestedCallError(
                f"Gateway.{what}() was called from inside a transaction fn (on the worker "
                "thread, or in place in its caller's thread); it would wait for itself. "
                "Use the conn argument the fn receives.")

    def _lane_for(self, priority: str, block: bool, timeout: float | None) -> int:
        lane = check_priority(priority)
        if block:
            if block is not True:
                raise ValueError(f"block must be True or False, not {block!r}")
            if not lane:
                raise ValueError("block=True is for background producers: pass "
                                 "priority='background' (interactive callers fail fast "
                                 "with Overloaded, so a web request never waits for room)")
            check_timeout(timeout)
        elif block is not False:
            raise ValueError(f"block must be True or False, not {block!r}")
        return lane

    def _enqueue(self, request: Request, block: bool = False,
                 timeout: float | None = None) -> None:
        if self._state is State.NEW:
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        self._check_not_worker(request.kind.value)
        self._queue.put(request, block, timeout)

    def _call(self, request: Request, timeout: float | None) -> Any:
        """Run a WAIT request: in place when the writer is idle, else via the worker."""
        if self._state is State.NEW:
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        worker = self._worker
        ident = threading.get_ident()
        if ident == worker.thread_ident or ident == worker.inline_ident:
            self._check_not_worker(request.kind.value)
        if (self.inline and worker.last_batch == 1 and ident != _MAIN_THREAD
                and not len(self._queue) and request.kind is not Kind.EXCLUSIVE
                and worker.writer.acquire(False)):
            try:
                accepted = self._queue.accept_inline(request)
                if accepted:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    worker.run_inline(request, deadline)
            finally:
                worker.writer.release()
            if accepted:
                if (deadline is not None and isinstance(request.error, apsw.InterruptError)
                        and time.monotonic() >= deadline):
                    request.error = None  # stopped at the caller's deadline: nothing committed
                    raise RequestTimeout(timeout or 0.0, started=True, interrupted=True)
                return request.wait(0)
        self._queue.put(request)
        # A caller who gives up on a running statement stops it. Not a fn's:
        # it may be running Python, which cannot be stopped (the watchdog's job).
        interrupt = worker.interrupt if request.kind in _SQL_KINDS else None
        return request.wait(timeout, interrupt)


_SLICE_STEP = 4  # parameter sets run between two looks at the clock


def _bulk_note(exc: BaseException, request: Request, done: int, total: int) -> str:
    """What bulk() knows of the file when ``request`` (its slice from ``done``) raised."""
    known = f"bulk(): {done} of {total} parameter sets were committed before this error"
    if isinstance(exc, RequestTimeout) and not exc.started:
        fate = "the slice after them had not started and will not run"
    elif isinstance(exc, RequestTimeout) or (not request.done
                                             and not isinstance(exc, GatewayError)):
        # The caller stopped waiting (a timeout after it started, Ctrl-C) on an
        # accepted slice: it may commit all the same (it may even have by now).
        fate = (f"the slice that starts at parameter set {done} was accepted and may still "
                "commit (all of it or none of it)")
    elif not request.done:
        fate = "the slice after them was not accepted"  # refused at once (closed, full)
    elif isinstance(exc, GatewayClosed):  # answered by a gateway that broke meanwhile
        fate = "the error says whether the slice after them may be committed"
    else:
        fate = "the slice after them was rolled back"  # its own error
    return f"{known}; {fate}; no later slice was sent"


def _run_slice(conn: Any, sql: str, rows: list[Params], start: int, seconds: float,
               preempted: Callable[[], bool] | None) -> tuple[int, int]:
    """On the worker: run rows[start:] until ``seconds`` have passed or
    ``preempted()`` says interactive work waits (after at least one step);
    return (parameter sets run, rows changed)."""
    deadline = time.monotonic() + seconds
    end = start
    changed = 0
    while end < len(rows):
        step = rows[end:end + _SLICE_STEP]
        changed += conn.executemany(sql, step).rowcount
        end += len(step)
        if time.monotonic() >= deadline or (preempted is not None and preempted()):
            break
    return end - start, changed


def _check_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")


def _check_seconds(name: str, value: object, zero_ok: bool = False) -> None:
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 <= value < float("inf") or (value == 0 and not zero_ok)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, not {value!r}")


def _after_fork_in_child() -> None:
    """A forked child cannot use its parent's gateways: refuse their calls at once."""
    parent, child = os.getppid(), os.getpid()
    for gateway in list(_open_gateways):
        gateway._disown(f"this gateway was started in process {parent}; a forked child "
                        f"(process {child}) must make its own Gateway after the fork")
    _open_gateways.clear()  # and the child's exit does not wait for the parent's workers


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_at_exit() -> None:
    """Drain gateways the program forgot to close (the worker is a daemon thread)."""
    for gateway in list(_open_gateways):
        if gateway.state in (State.RUNNING, State.CLOSING):
            logger.warning("%r was not closed; closing it at interpreter exit", gateway)
            gateway.close(timeout=_EXIT_CLOSE_TIMEOUT)
