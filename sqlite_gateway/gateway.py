"""The Gateway facade: the calls that wait, run in the callers' threads.

Each call checks its input, enqueues a :class:`~sqlite_gateway.request.Request`
(or, when the writer is idle, runs it in place under the writer's lock), waits
on that request's own answer and re-raises what the worker raised. It never
touches the write connection; the :class:`~sqlite_gateway.worker.Worker` does.

The class is one object made of parts, one concept each, built by
``__init__`` from the :mod:`~sqlite_gateway.options`:

- its :class:`~sqlite_gateway.lifecycle.Lifecycle`: its states, start, close,
  fork and interpreter exit (``start``, ``close`` and ``state`` hand over to it);
- its :class:`~sqlite_gateway.core.Core` (``Gateway.core``): what every door
  shares (input checks, enqueue, read routing, the bulk and flush plans, and
  the write-behind calls ``submit`` and ``post``, written there whole); the
  asyncio door uses the same one;
- here: what is this door's own, waiting in the caller's thread, and running a
  call in place when the writer is idle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

import apsw

from .arguments import Params, check_params, check_sql, check_timeout, lane_of
from .core import Core, run_plan
from .errors import GatewayClosed, GatewayError, RequestTimeout
from .failures import PostFailure
from .lifecycle import Lifecycle, State
from .options import DEFAULT, Options, Timeout, check_path
from .readerlanes import ReaderLanes
from .readerpool import ReaderPool
from .request import WAIT, Kind, Request
from .requestqueue import RequestQueue
from .result import Result
from .snapshot import Snapshot
from .stats import Stats
from .watchdog import Watchdog
from .worker import Worker
from .writeblock import WriteBlock

__all__ = ["DEFAULT", "Gateway", "State", "Timeout"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_monotonic = time.monotonic

# Signals (Ctrl-C) are delivered to the main thread: it never runs the
# writer's own steps in place, so a KeyboardInterrupt cannot land in a COMMIT.
_MAIN_THREAD = threading.main_thread().ident


def _main_thread_after_fork() -> None:
    """In a forked child the forking thread is the main thread (it gets the signals)."""
    global _MAIN_THREAD
    _MAIN_THREAD = threading.get_ident()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_main_thread_after_fork)


class Gateway:
    """A single-writer gateway to one SQLite database file.

    Every method is thread-safe. Calls that return a :class:`Result` (or a
    fn's value) return only after the data is committed; with the default
    ``synchronous="FULL"`` a returned call survives a crash or power loss.

    Args:
        path: the database file (created if missing). ``:memory:`` is refused:
            the gateway needs WAL, which needs a file; so are URI file names
            (``file:...``): the gateway opens its connections in the modes it needs.
        options: an :class:`~sqlite_gateway.Options` (default: the defaults).
        **overrides: any option by name (``queue_size=100``, ``readers=0``...;
            see :class:`~sqlite_gateway.Options` for each one's meaning and
            default), applied over ``options``.

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

    Lifecycle: ``start()`` (or ``with``) before any call; ``close()`` drains;
    see :class:`~sqlite_gateway.State`.

    ``core`` is the :class:`~sqlite_gateway.core.Core` this gateway shares with
    its other doors (the asyncio one); applications do not need it.

    Raises:
        ValueError: an option is out of range, or the path names no file.
        TypeError: an unknown option.
    """

    def __init__(self, path: str | os.PathLike[str], options: Options | None = None,
                 **overrides: Any) -> None:
        path = check_path(path)
        opts = self.options = Options.build(options, overrides)
        self.timeout = opts.timeout
        self.inline = opts.inline
        self.background_slice = opts.background_slice
        queue = RequestQueue(opts.queue_size)
        self._stats = Stats()
        worker = Worker(path, queue, self._stats, batch_max=opts.batch_max,
                        synchronous=opts.synchronous, busy_timeout=opts.busy_timeout,
                        vfs=opts.vfs, background_slice=opts.background_slice,
                        autocheckpoint=opts.autocheckpoint, setup=opts.connection_setup,
                        process_lock=opts.process_lock)
        watchdog = None if opts.hang_timeout is None else Watchdog(
            worker, opts.hang_timeout, f"sqlite-gateway-watchdog:{os.path.basename(path)}")
        readers: ReaderPool | ReaderLanes | None = None
        if opts.readers and opts.read_mode == "inline":
            readers = ReaderPool(path, opts.readers, opts.busy_timeout, opts.vfs,
                                 opts.hang_timeout, opts.connection_setup)
        elif opts.readers:
            readers = ReaderLanes(path, opts.readers, opts.busy_timeout, opts.queue_size,
                                  opts.vfs, opts.hang_timeout, opts.connection_setup)
        self.path = path
        self.core = Core(queue, worker, readers, timeout=opts.timeout,
                         background_slice=opts.background_slice)
        self._worker = worker
        # The state machine: start, close, fork and exit (see lifecycle.py).
        self._life = Lifecycle(path, self.core, watchdog)
        # A block is never held so long that the watchdog takes it for a hang.
        self._hold_limit = opts.hold_limit if opts.hang_timeout is None else min(
            opts.hold_limit, opts.hang_timeout / 2)

    @property
    def state(self) -> State:
        """The lifecycle state (a snapshot; see :class:`~sqlite_gateway.State`)."""
        return self._life.state

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
        self._life.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, commit everything already queued, stop the worker.

        Idempotent and thread-safe; calls after it raise :class:`GatewayClosed`.
        Returns when the worker has stopped, or after ``timeout`` seconds; in
        that case (a transaction fn that hangs) the requests still queued are
        answered with :class:`GatewayClosed`, so nobody waits forever. On a
        broken gateway it returns at once: there is nothing left to drain.

        Raises:
            NestedCallError: called from inside a transaction fn.
        """
        self._life.close(timeout)

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
        else goes to the writer (so does a statement SQLite judged read-only
        that then writes, such as ``PRAGMA optimize``). Temporary tables
        live on the writer only: use them inside ``transaction()``. For
        several statements the Result holds the rows and columns of the
        last one that returned rows.

        Raises:
            apsw.Error: SQLite's own error, the same object the worker caught
                (e.g. ``apsw.ConstraintError``); nothing of the call is kept,
                except after an I/O error in the batch's COMMIT, whose note
                (``__notes__``) says it may be committed.
            TransactionControlError: ``sql`` holds BEGIN/COMMIT/SAVEPOINT/...
            TypeError, ValueError: ``sql`` or ``params`` of the wrong kind.
            KeyError: a named parameter has no value in ``params`` (named).
            Overloaded, GatewayClosed: refused at once, nothing enqueued.
            RequestTimeout: you stopped waiting. If the request had not
                started it will not run; if it had, it may still commit. The
                timeout covers the whole call (a reader's wait included).
        """
        core = self.core
        fast = core.fast
        if fast is not None and type(params) is tuple and timeout is DEFAULT and type(sql) is str:
            # The lean read (see ReaderPool.fast_read): a known read on this
            # thread's own reader. Not while a fn runs in place (its thread
            # is refused below; which thread it is costs more to ask).
            if self._worker.inline_ident is None and priority == "interactive":
                result = fast.fast_read(sql, params, self.timeout)
                if result is not None:
                    return result
        sql, params = check_sql(sql), check_params(params)
        lane = lane_of(priority)
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        if core.readers is not None and sql not in core.writes:
            readers = core.reader_for(sql)
            if readers is not None:
                ident, worker = threading.get_ident(), self._worker
                if ident == worker.thread_ident or ident == worker.inline_ident:
                    core.check_caller("execute")
                # (A thread holding a write block may read here: a reader does not
                # wait for the writer. A write goes to _call, which refuses it.)
                started = _monotonic()
                result = readers.read(sql, params, wait)  # (core.read, less one call)
                if result is not None:
                    return result
                core.learned_write(sql)
                if wait is not None:  # one deadline for the whole call: the reader's wait counts
                    return self._call_within(Request.waiting(  # type: ignore[no-any-return]
                        Kind.EXECUTE, sql, params, None, (), None, lane), wait, started)
        return self._call(Request.waiting(  # type: ignore[no-any-return]
            Kind.EXECUTE, sql, params, None, (), None, lane), wait)

    def snapshot(self, *, timeout: Timeout = DEFAULT) -> Snapshot:
        """Several reads in one consistent view, for ``with``::

            with db.snapshot() as s:
                order = s.execute("SELECT * FROM orders WHERE id = ?", (oid,)).rows
                lines = s.execute("SELECT * FROM lines WHERE order_id = ?", (oid,)).rows

        Every ``s.execute`` sees the database as of entering the ``with``
        (after every write acknowledged before it), none of the writes
        committed meanwhile; the reader is taken once, on entering. Reads
        only: a write raises :class:`~sqlite_gateway.snapshot.SnapshotWriteError`.
        ``timeout`` bounds the wait for a reader on entering and each
        statement (default: the gateway's). See :mod:`sqlite_gateway.snapshot`.

        Raises:
            GatewayError: no reader pool (``readers=0`` or ``read_mode="threads"``),
                or the gateway is not started.
            NestedCallError: called from inside a transaction fn or a write block.
            GatewayClosed: the gateway is closed (or this is a forked child).
        """
        core = self.core
        wait = core.wait_for(timeout)
        reason = core.queue.closed_reason
        if reason is not None:
            raise GatewayClosed(reason)
        if not core.started:
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        core.check_caller("snapshot")
        if core.fast is None:
            raise GatewayError("snapshot() needs reader connections: readers >= 1 with "
                               "read_mode='inline' (the default)")
        return Snapshot(core.fast, wait, self.options.hang_timeout)

    def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                    timeout: Timeout = DEFAULT, priority: str = "interactive") -> Result:
        """Run one statement once per parameter set, all atomically (like execute).

        All of it is one request: it holds the writer until done. For a long
        job beside interactive traffic, :meth:`bulk` cuts it into slices.
        """
        wait = self.core.wait_for(timeout)
        # (The parameter sets are materialised here, not on the worker.)
        return self._call(self.core.sql_request(Kind.EXECUTEMANY, sql, seq_of_params,  # type: ignore[no-any-return]
                                                priority, WAIT), wait)

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
        request = Request.waiting(Kind.TRANSACTION, None, None, fn, args, kwargs,
                                  lane_of(priority))
        return self._call(request, wait)  # type: ignore[no-any-return]

    def writer(self, *, timeout: Timeout = DEFAULT, priority: str = "interactive") -> WriteBlock:
        """A write block: an interactive transaction that holds the writer (``with``).

        ::

            with db.writer() as w:
                stock = w.execute("SELECT stock FROM items WHERE id = ?", (7,)).scalar()
                if stock > 0:
                    w.execute("UPDATE items SET stock = ? WHERE id = ?", (stock - 1, 7))
            # committed here (durable with synchronous="FULL")

        For code that must run Python between its statements with the writer
        held (read-modify-write, ORMs): where all of it can be one function,
        :meth:`transaction` is cheaper and never holds the writer while your
        thread is elsewhere. The block joins a batch as one request: it runs
        inside that batch's transaction and commits with it; other callers
        wait while it is held. ``w`` offers ``execute``, ``executemany`` and
        ``savepoint()``, run in your thread directly on the write connection
        (a statement costs about what it costs on a fn's ``conn``); reads on
        it see the block's own writes. Measured (python -m benchmarks.writeblock, one
        thread): a statement on ``w`` costs about 1.15x the same statement on a
        fn's ``conn`` (2.84 against 2.48 us); a whole block about 2.5x a
        ``transaction()`` call on an idle gateway (two more thread hand-offs).

        Leaving the ``with`` returns once the block is committed; an
        exception in it rolls the block back and goes on. The block may hold
        the writer for ``hold_limit`` seconds (an option, default 5); then it
        is rolled back and ``w``'s next statement, or leaving the ``with``,
        raises :class:`WriteBlockExpired`. While your thread holds the block,
        its calls on this gateway that need the writer raise
        :class:`NestedCallError` at once (they would wait for the block); a
        read through ``db.execute`` goes to a reader and sees the last
        commit, not the block's writes. ``timeout`` bounds the wait for the
        writer on entering and for the COMMIT on leaving; ``priority`` is the
        block's place in the queue, as for :meth:`transaction`. See
        :class:`~sqlite_gateway.writeblock.WriteBlock` for the details.

        Raises (on entering): RequestTimeout, NestedCallError, GatewayClosed,
        Overloaded, ValueError (a bad timeout or priority: at this call).
        """
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        lane = lane_of(priority)
        return WriteBlock(self.core.enqueue, self._worker, self._stats, wait, lane,
                          self._hold_limit)

    def flush(self, timeout: Timeout = DEFAULT) -> None:
        """Barrier: return once every request accepted before it is committed or failed.

        Accepted even when the queue is full (a barrier carries no data), so
        a producer can always wait for its earlier writes.

        Raises:
            RequestTimeout: the barrier was not reached in time (the earlier
                requests are still queued and will still run).
            GatewayClosed: the gateway is closed or broken.
        """
        wait = self.core.wait_for(timeout)
        run_plan(self.core.flush_plan(WAIT), lambda request: self._call(request, wait))

    def run_exclusive(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = DEFAULT,
                      priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(apsw_connection, ...)`` alone, between batches, outside any transaction.

        For maintenance that cannot run inside a transaction: checkpoints,
        VACUUM, ``PRAGMA optimize``, the backup API. fn gets the raw write
        connection for the duration of the call only; do not keep it.
        It may use explicit transactions; one left open is rolled back.
        """
        wait = self.core.wait_for(timeout)
        request = self.core.fn_request(Kind.EXCLUSIVE, fn, args, kwargs, priority, WAIT)
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
        wait = self.core.wait_for(timeout)
        plan = self.core.bulk_plan(sql, seq_of_params, priority, WAIT)
        return run_plan(plan, lambda request: self._call(request, wait))

    # -- write-behind: the calls that return at once --------------------------------
    # (Each written once in the Core, for every door; one delegating call costs
    # about 0.02 us of a post's 1.7, timeit, load average 3.3.)

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
        return self.core.submit(sql, params, priority, block, timeout)

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", block: bool = False,
                           timeout: float | None = None, **kwargs: Any) -> Future[T]:
        """Write-behind form of :meth:`transaction`; returns its future at once.

        ``fn``'s arguments are passed as they are (not copied): do not change
        them until the future is done. ``block`` and ``timeout`` are as in
        :meth:`submit` (every other keyword goes to fn).
        """
        return self.core.submit_transaction(fn, args, kwargs, priority, block, timeout)

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
        self.core.post(sql, params, priority, block, timeout)

    def failures(self) -> list[PostFailure]:
        """Return the :meth:`post` failures since the last call, and forget them.

        Thread-safe; each failure is returned to exactly one caller. At most
        1000 are kept between two calls; the rest are only counted
        (``stats()["post_failures"]``).
        """
        return self.core.failures.take()

    def stats(self) -> dict[str, Any]:
        """Figures since start: queued now, requests, errors, batches, commits,
        batch_mean, batch_max, latency p50/p99/max in ms (wait + run, over the
        most recent requests). Approximate: a snapshot taken while work goes on."""
        figures = self._stats.snapshot(len(self.core.queue))
        figures["post_failures"] = self.core.failures.total
        figures["state"] = self.state.value
        readers = self.core.readers
        figures["reads"] = readers.reads if readers else 0
        figures["reads_to_writer"] = readers.to_writer if readers else 0
        return figures

    # -- plumbing ---------------------------------------------------------------

    def _call_within(self, request: Request, timeout: float, started: float) -> Any:
        """:meth:`_call` with what is left of ``timeout`` since ``started``; a
        RequestTimeout names the caller's whole timeout."""
        try:
            return self._call(request, max(0.0, timeout - (_monotonic() - started)))
        except RequestTimeout as exc:
            raise RequestTimeout(timeout, exc.started, exc.interrupted) from None

    def _call(self, request: Request, timeout: float | None) -> Any:
        """Run a WAIT request: in place when the writer is idle, else via the worker."""
        core = self.core
        if not core.started and self._life.is_new():
            raise GatewayError("gateway is not started: call start() or use "
                               "'with Gateway(path) as db:'")
        worker = self._worker
        ident = threading.get_ident()
        if (ident == worker.thread_ident or ident == worker.inline_ident
                or ident == worker.holder_ident):
            core.check_caller(request.kind.value)
        if (self.inline and worker.last_batch == 1 and ident != _MAIN_THREAD
                and not len(core.queue) and request.kind is not Kind.EXCLUSIVE
                and worker.writer.acquire(False)):
            try:
                accepted = core.queue.accept_inline(request)
                if accepted:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    worker.run_inline(request, deadline)
            finally:
                worker.writer.release()
            if accepted:
                # Only the answer is read (never the worker's working fields): a
                # watchdog that gave this call up answered first, and that wins.
                try:
                    return request.wait(0)
                except (apsw.InterruptError, apsw.BusyError) as exc:
                    if deadline is None or time.monotonic() < deadline:
                        raise
                    # Stopped at the caller's deadline, before COMMIT (the deadline
                    # is disarmed there): nothing of it was committed. BusyError:
                    # BEGIN gave up waiting for another process's lock; it never ran.
                    interrupted = isinstance(exc, apsw.InterruptError)
                    del exc
                    raise RequestTimeout(timeout or 0.0, started=interrupted,
                                         interrupted=interrupted) from None
        core.queue.put(request)
        # A caller who gives up on a running statement stops it. Not a fn's:
        # it may be running Python, which cannot be stopped (the watchdog's job).
        return request.wait(timeout, core.interrupt)
