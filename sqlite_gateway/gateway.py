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
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, Literal, TypeVar, Union

import apsw

from .connection import SYNCHRONOUS
from .errors import GatewayClosed, GatewayError, NestedCallError
from .request import (Kind, Params, Request, check_many, check_params, check_priority, check_sql,
                      wait_for)
from .requestqueue import RequestQueue, fail_pending
from .readers import ReaderLanes, ThreadReaders
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


_SQL_KINDS = (Kind.EXECUTE, Kind.EXECUTEMANY)  # requests that are SQL only
_WRITES_MEMO = 4096  # SQL texts remembered as writes (cleared when full)
_EXIT_CLOSE_TIMEOUT = 30.0  # how long the exit hook waits for one gateway to drain
_open_gateways: weakref.WeakSet[Gateway] = weakref.WeakSet()


class Gateway:
    """A single-writer gateway to one SQLite database file.

    Every method is thread-safe. Calls that return a :class:`Result` (or a
    fn's value) return only after the data is committed; with the default
    ``synchronous="FULL"`` a returned call survives a crash or power loss.

    Args:
        path: the database file (created if missing). ``:memory:`` is refused:
            the gateway needs WAL, which needs a file.
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
        autocheckpoint: the writer's ``wal_autocheckpoint``: after a commit
            that leaves at least this many pages in the WAL, the writer runs a
            PASSIVE checkpoint (SQLite's default, 1000). 0 switches it off:
            use 0 beside Litestream, which then owns checkpointing (and the
            WAL grows until something checkpoints).
        readers: read-only connections that serve ``execute()`` calls whose
            statements cannot write (as SQLite judges them), beside the
            writer. 0 sends every statement through the one writer.
        read_mode: ``"inline"`` (each calling thread owns a reader and reads
            in place, no hand-off; up to ``readers`` threads, the reads of
            others go through the writer) or ``"threads"`` (``readers``
            threads, each owning a connection, fed by a queue).
        vfs: the name of a registered SQLite VFS for every connection the
            gateway opens (None: SQLite's default).
        hang_timeout: seconds one step of the worker (a statement, a
            transaction or exclusive fn, a COMMIT) may run. Past it the
            running SQL is interrupted (the request fails with
            ``apsw.InterruptError``); if the step still has not ended about a
            second later (a Python fn that never returns), the gateway is
            broken: every waiting and later call raises GatewayClosed, and
            the stuck thread keeps the write lock until the process exits.
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

    Raises:
        ValueError, TypeError: an option is out of range or of the wrong type.
    """

    def __init__(self, path: str | os.PathLike[str], *, queue_size: int = 10_000,
                 batch_max: int = 256, timeout: float | None = 30.0,
                 synchronous: str = "FULL", busy_timeout: float = 5.0, readers: int = 0,
                 read_mode: str = "inline", vfs: str | None = None,
                 hang_timeout: float | None = 60.0, background_slice: float = 0.01,
                 autocheckpoint: int = 1000) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path or path == ":memory:" or path.startswith(
                "file::memory:"):
            raise ValueError(f"path must name a database file, not {path!r} "
                             "(the gateway needs WAL, which needs a file)")
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
        self.background_slice = float(background_slice)
        self._queue = RequestQueue(queue_size)
        self._stats = Stats()
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
        self._readers: ThreadReaders | ReaderLanes | None = None
        # SQL texts a reader sent on to the writer (set ops are atomic under the GIL).
        self._writes: set[str] = set()
        if readers and read_mode == "inline":
            self._readers = ThreadReaders(path, readers, busy_timeout, vfs)
        elif readers:
            self._readers = ReaderLanes(path, readers, busy_timeout, queue_size, vfs)

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
        foreign keys, busy timeout).

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
                thread.join()
                self._state = State.CLOSED
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
        lane = check_priority(priority)
        readers = self._readers
        if readers is not None and sql not in self._writes and self._state is State.RUNNING and (
                threading.get_ident() != self._worker.thread_ident):
            reason = self._queue.closed_reason
            if reason is not None:
                raise GatewayClosed(reason)
            result = readers.read(sql, params, self.timeout if timeout is DEFAULT else timeout)
            if result is not None:
                return result
            if len(self._writes) >= _WRITES_MEMO:
                self._writes.clear()
            self._writes.add(sql)  # SQLite judged it a write: next time, straight to the writer
        return self._call(Request(Kind.EXECUTE, sql, params, priority=lane),  # type: ignore[no-any-return]
                          timeout)

    def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                    timeout: Timeout = DEFAULT, priority: str = "interactive") -> Result:
        """Run one statement once per parameter set, all atomically (like execute).

        All of it is one request: it holds the writer until done. For a long
        job beside interactive traffic, :meth:`bulk` cuts it into slices.
        """
        lane = check_priority(priority)
        params = check_many(seq_of_params)  # materialised here, not on the worker
        return self._call(Request(Kind.EXECUTEMANY, check_sql(sql), params,  # type: ignore[no-any-return]
                                  priority=lane), timeout)

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
        request = Request(Kind.TRANSACTION, fn=fn, args=args, kwargs=kwargs,
                          priority=check_priority(priority))
        return self._call(request, timeout)  # type: ignore[no-any-return]

    def submit(self, sql: str, params: Params = (), *,
               priority: str = "interactive") -> Future[Result]:
        """Write-behind: enqueue ``sql`` and return its future at once.

        Submissions of one priority run in the order they were accepted. The future's result
        is set only after the commit; its exception is SQLite's own error.
        Cancelling the future before the request starts stops it from running.

        Raises:
            Overloaded, GatewayClosed, TypeError, ValueError: at once; nothing enqueued.
        """
        request = Request(Kind.EXECUTE, check_sql(sql), check_params(params),
                          priority=check_priority(priority))
        self._enqueue(request)
        return request.future

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", **kwargs: Any) -> Future[T]:
        """Write-behind form of :meth:`transaction`; returns its future at once."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request(Kind.TRANSACTION, fn=fn, args=args, kwargs=kwargs,
                          priority=check_priority(priority))
        self._enqueue(request)
        return request.future

    def flush(self, timeout: Timeout = DEFAULT) -> None:
        """Barrier: return once every request accepted before it is committed or failed.

        Raises:
            RequestTimeout: the barrier was not reached in time (the earlier
                requests are still queued and will still run).
            GatewayClosed: the gateway is closed or broken.
        """
        request = Request(Kind.FLUSH)
        self._call(request, timeout)

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
        request = Request(Kind.EXCLUSIVE, fn=fn, args=args, kwargs=kwargs,
                          priority=check_priority(priority))
        return self._call(request, timeout)  # type: ignore[no-any-return]

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
            sets were committed before it; the rest are not run.
            TypeError, ValueError, Overloaded, GatewayClosed: as executemany.
        """
        rows = check_many(seq_of_params)
        sql, lane = check_sql(sql), check_priority(priority)
        done = changed = 0
        while done < len(rows):
            try:
                ran, count = self._call(Request(
                    Kind.TRANSACTION, fn=_run_slice, priority=lane,
                    args=(sql, rows, done, self.background_slice,
                          self._queue.interactive_waiting if lane else None)), timeout)
            except BaseException as exc:
                exc.add_note(f"bulk(): {done} of {len(rows)} parameter sets were committed "
                             "before this error; the rest did not run")
                raise
            done += ran
            changed += count
        return changed

    def stats(self) -> dict[str, Any]:
        """Figures since start: queued now, requests, errors, batches, commits,
        batch_mean, batch_max, latency p50/p99/max in ms (wait + run, over the
        most recent requests). Approximate: a snapshot taken while work goes on."""
        figures = self._stats.snapshot(len(self._queue))
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
            sql, params = check_sql(sql), check_params(params)
            # The caller goes on before the worker runs it: copy, as write-behind calls must.
            params = dict(params) if isinstance(params, Mapping) else tuple(params)
        elif kind is Kind.EXECUTEMANY:
            params = check_many(params)
            sql = check_sql(sql)
        elif kind is not Kind.FLUSH and not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        request = Request(kind, sql, params, fn=fn, args=args, kwargs=kwargs, priority=lane)
        self._enqueue(request)
        worker = self._worker
        if kind in _SQL_KINDS:
            return request.future, lambda: worker.interrupt(request)
        return request.future, lambda: False

    # -- plumbing ---------------------------------------------------------------

    def _check_not_worker(self, what: str) -> None:
        if threading.get_ident() == self._worker.thread_ident:
            raise NestedCallError(
                f"Gateway.{what}() was called from inside a transaction fn, on the worker "
                "thread; it would wait for itself. Use the conn argument the fn receives.")

    def _enqueue(self, request: Request) -> None:
        if self._state is State.NEW:
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        self._check_not_worker(request.kind.value)
        self._queue.put(request)

    def _call(self, request: Request, timeout: Timeout) -> Any:
        self._enqueue(request)
        # A caller who gives up on a running statement stops it. Not a fn's:
        # it may be running Python, which cannot be stopped (the watchdog's job).
        interrupt = self._worker.interrupt if request.kind in _SQL_KINDS else None
        return wait_for(request, self.timeout if timeout is DEFAULT else timeout, interrupt)


_SLICE_STEP = 4  # parameter sets run between two looks at the clock


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
            or value < 0 or (value == 0 and not zero_ok) or value != value):
        raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")


@atexit.register
def _close_at_exit() -> None:
    """Drain gateways the program forgot to close (the worker is a daemon thread)."""
    for gateway in list(_open_gateways):
        if gateway.state in (State.RUNNING, State.CLOSING):
            logger.warning("%r was not closed; closing it at interpreter exit", gateway)
            gateway.close(timeout=_EXIT_CLOSE_TIMEOUT)
