"""The worker: the one thread that owns the write connection.

A queued request's path: caller -> ``RequestQueue.put`` -> ``Worker.run_once``
takes the batch -> ``BEGIN IMMEDIATE`` -> per request ``SAVEPOINT`` where it can
matter, run, ``RELEASE`` (or ``ROLLBACK TO``) -> ``COMMIT`` -> every request
answered (a waiting caller's lock released, a future set, or, for ``post``, a
failure recorded). A request may instead run in its caller's thread (below).
No caller hears anything before the COMMIT has returned, so an answer means
the data is committed (and, with ``synchronous=FULL``, on disk).

What a batch costs is kept to what it needs: a request alone in its
transaction runs without a savepoint (if it fails, the transaction is undone
instead); a single statement runs without one too, and if it fails after
writing rows that SQLite keeps (``OR FAIL``, ``RAISE(FAIL)``), the change
count shows it and the transaction is undone and the others re-run, so a
failed call never keeps anything (see :meth:`Batches.run_one`).

In place. When the writer is idle and nothing waits, a caller may take
:attr:`Worker.writer` itself and run its one request in its own thread
(:meth:`Worker.run_inline`): the same steps, without the two thread hand-offs
that cost more than a small transaction. The worker takes the same lock
before it takes a batch, so the two never overlap and nothing is overtaken.

The worker is given the queue and its settings, never the Gateway, so an
abandoned gateway can still be garbage-collected.

Faults. An error in a caller's SQL goes back to that caller (SQLite undoes
the statement, or the whole transaction, and the others are re-run). When
the worker's own BEGIN/COMMIT fails, the whole batch gets that error. After
an I/O error anywhere, or a ROLLBACK that fails, the worker closes its
connection and opens a new one (nothing cached from before the fault is
trusted, and SQLite drops a half-done transaction); it dies only if it cannot
reopen. The worker marks each step in its :class:`~sqlite_gateway.turn.Turn`;
the watchdog reads it to interrupt the running request's SQL, or to give the
worker up (``give_up``) when it is stuck in a Python fn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import apsw

from .batch import Batches
from .errors import GatewayClosed
from .processlock import ProcessLock
from .processlock import available as processlock_available
from .request import STOP, Kind, Request
from .requestqueue import RequestQueue, fail_pending
from .stats import Stats
from .turn import GivenUp, Turn
from .writeconn import WriteConn

logger = logging.getLogger(__name__)

class Worker:
    """Runs batches of requests on its own connection.

    ``run()`` is the thread's target; ``run_once()`` is one turn of it and can
    be driven by hand in a test (after ``open()``), with no thread at all.
    Its parts: ``link`` (the write connection, :class:`WriteConn`) and
    ``batches`` (what runs a taken batch, :class:`Batches`).
    """

    def __init__(self, path: str, queue: RequestQueue, stats: Stats, *,
                 batch_max: int, synchronous: str, busy_timeout: float,
                 vfs: str | None = None, background_slice: float = 0.01,
                 autocheckpoint: int = 1000,
                 setup: Callable[[apsw.Connection], object] | None = None,
                 process_lock: bool = False) -> None:
        self.path = path
        # The kernel lock that orders the writers of this file across processes
        # (see processlock.py); made in open(), on the worker's thread.
        self.process_lock: ProcessLock | None = None
        self._use_process_lock = process_lock
        self.queue = queue
        self.stats = stats
        self.batch_max = batch_max
        self.busy_timeout = busy_timeout
        self.ready: Future[None] = Future()  # done once the connection is open (or failed)
        # Set once the worker will run nothing more: it stopped, or was given up.
        self.stopped = threading.Event()
        self.turn = Turn()  # the current step, read by the watchdog
        self.link = WriteConn(path, synchronous=synchronous, busy_timeout=busy_timeout,
                              vfs=vfs, autocheckpoint=autocheckpoint, setup=setup)
        self.batches = Batches(self.link, self.turn, queue, stats, background_slice)
        self.thread_ident: int | None = None
        # Held while a batch runs: by this thread, or by a caller that runs its
        # own request in place because the worker was idle (see run_inline).
        self.writer = threading.Lock()
        self.inline_ident: int | None = None  # that caller's thread, while it runs
        # The thread holding a write block (Gateway.writer()) while it holds
        # it: a gateway call from there would wait for itself.
        self.holder_ident: int | None = None
        # Size of the last batch: 1 means callers come one at a time, so one
        # may run its request in place; under load batches grow and every
        # call goes through the worker (one fsync for many, not one each).
        self.last_batch = 1
        self._inflight: list[Request] = []

    # -- thread body ------------------------------------------------------

    def open(self) -> None:
        """Open the write connection, then the process lock if asked for.

        Raises:
            apsw.Error: the file could not be opened or configured.
        """
        self.link.open()
        # After the connection, so that SQLite reports a file it cannot open.
        if self._use_process_lock and self.process_lock is None and processlock_available():
            lock = ProcessLock(self.path)
            try:
                lock.open()
            except OSError as exc:  # a read-only folder, say: SQLite's locking still applies
                logger.warning("no process lock for %s (%s): writers of other processes "
                               "meet this one in SQLite's busy handler", self.path, exc)
            else:
                self.process_lock = self.batches.process_lock = lock

    def close(self) -> None:
        """Close the write connection (SQLite rolls back an open transaction)."""
        self.link.close()

    def run(self) -> None:
        self.thread_ident = threading.get_ident()
        try:
            self.open()
        except BaseException as exc:
            # start() re-raises this; no request can have been accepted yet.
            self.queue.close(f"gateway could not open {self.path!r}: {exc}")
            self.thread_ident = None  # see the end of run()
            self.ready.set_exception(exc)
            self.stopped.set()
            return
        self.ready.set_result(None)
        logger.info("worker started on %s", self.path)
        try:
            while self.run_once():
                pass
        except BaseException as exc:
            logger.critical("sqlite_gateway worker died", exc_info=True)
            self.give_up(f"worker died: {type(exc).__name__}: {exc}")
        finally:
            with self.writer:  # not under a caller running its request in place
                self.close()
                if self.process_lock is not None:
                    self.process_lock.close()
            # The OS reuses a dead thread's ident at once: keep it, and the next
            # thread to get it would be taken for this worker (NestedCallError).
            self.thread_ident = None
            self.stopped.set()
        logger.info("worker stopped on %s", self.path)

    @property
    def death(self) -> str | None:
        """Why the worker died or was given up; None while it serves."""
        return self.turn.death

    def give_up(self, reason: str, step: float | None = None) -> bool:
        """Fail everything in flight and queued; refuse everything later.

        Thread-safe: the worker calls it as it dies, the watchdog when the
        worker is stuck in the step that began at ``step`` (nothing happens
        if it has moved on). A stuck worker that returns later finds out at
        its next step, commits nothing and stops. True if it gave up.
        """
        committing = self.turn.die(reason, step)
        if committing is None:
            return False
        inflight = self._inflight
        message = f"gateway is broken: {reason}"
        self.queue.close(message)
        note = ("its batch was being committed: it may be committed" if committing
                else "it was not committed")
        fail_pending(inflight, lambda: GatewayClosed(f"{message}; {note}"))
        fail_pending(self.queue.drain(), lambda: GatewayClosed(message))
        self.stopped.set()
        return True

    def interrupt(self, request: Request) -> bool:
        """Stop ``request``'s running SQL statement, if its code runs now.

        Thread-safe. True if it was running: its statement then raises
        ``apsw.InterruptError`` on the worker (a fn may catch it; a statement
        that was just finishing may still complete). A request running Python
        code is not affected: SQLite resets the flag when the next statement
        starts on an idle connection.
        """
        if not self.turn.interrupt(request, self.link.conn):
            return False
        logger.warning("interrupted the running statement of %r", request)
        return True

    # -- one turn -----------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> bool:
        """Take one batch, run it, commit, answer. False once the queue is
        closed and drained (the worker then exits).

        Args:
            timeout: how long to wait for work (None: until some arrives).
        """
        if not self.queue.wait(timeout):
            return True
        # The writer lock is taken before the batch leaves the queue: a caller
        # that finds the queue empty and the lock free knows nothing is in
        # flight, so running its request in place cannot overtake any other.
        with self.writer:
            # Another process's writer may hold the file: wait in the kernel
            # (woken as it lets go) before taking the batch, which grows meanwhile.
            lock = self.process_lock
            held = lock is not None and lock.acquire(self.busy_timeout)
            try:
                batch = self.queue.take(self.batch_max)
                if batch is STOP:
                    return False
                assert isinstance(batch, list)
                return self._serve(batch) if batch else True
            finally:
                if held:
                    lock.release()  # type: ignore[union-attr]

    def run_inline(self, request: Request, deadline: float | None) -> bool:
        """Run ``request`` (accepted by ``queue.accept_inline``) in the calling thread.

        The caller holds :attr:`writer`, so the worker is idle and stays so
        until this returns: one batch of one, with every step the worker
        would take (turn marks for the watchdog, savepoint, COMMIT, stats,
        the answer). Saves the two thread hand-offs that cost more than a
        small transaction itself when the gateway is not busy.
        """
        self.inline_ident = threading.get_ident()
        self.link.deadline = deadline
        lock = self.process_lock
        held = False
        try:
            if lock is not None:
                wait = self.busy_timeout
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                held = lock.acquire(wait)
            return self._serve([request])
        except BaseException as exc:
            logger.critical("sqlite_gateway writer failed in a caller's thread", exc_info=True)
            self.give_up(f"writer failed: {type(exc).__name__}: {exc}")
            return False
        finally:
            if held:
                lock.release()  # type: ignore[union-attr]
            self.inline_ident = None
            self.link.deadline = None

    def _serve(self, batch: list[Request]) -> bool:
        """Run one batch (writer lock held); False if the worker was given up."""
        self._inflight = batch
        self.last_batch = len(batch)
        try:
            if batch[0].kind is Kind.EXCLUSIVE:
                self.batches.run_exclusive(batch[0])
            else:
                self.batches.run_batch(batch)
        except GivenUp:
            # give_up() answered the batch (unless it took this one just as the
            # watchdog struck: answered here). run() closes the connection,
            # which rolls back whatever the batch had done.
            logger.warning("worker on %s returned after it was given up; stopping", self.path)
            # GivenUp is raised as a step begins, COMMIT included: nothing committed.
            fail_pending(batch, lambda: GatewayClosed(
                f"gateway is broken: {self.death}; it was not committed"))
            return False
        # (On any other exception the worker dies: give_up() answers _inflight.)
        self._inflight = []
        self.turn.idle()
        if self.link.suspect:
            self.link.suspect = False
            self.link.reopen("an I/O error in the last batch")
        return True
