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
failed call never keeps anything; runs of write-behind statements go through
one tight loop (:meth:`Worker._run_write_behind`).

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
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import apsw

from .batch import Batches
from .connection import TransactionGuard, open_write_connection
from .errors import GatewayClosed
from .memo import TextMemo
from .processlock import ProcessLock
from .processlock import available as processlock_available
from .request import STOP, Kind, Request
from .requestqueue import RequestQueue, fail_pending
from .stats import Stats
from .turn import GivenUp, Turn

logger = logging.getLogger(__name__)

_REOPEN_DELAYS = (0.0, 0.1, 1.0)  # seconds before each attempt to reopen; then the worker dies
_PROGRESS_STEPS = 1000  # SQLite VM steps between two looks at an in-place caller's deadline
# Seconds between two tries for a lock another process holds: SQLite's own
# busy-timeout schedule (sqliteDefaultBusyCallback).
_BUSY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)


class Worker(Batches):
    """Runs batches of requests on its own connection.

    ``run()`` is the thread's target; ``run_once()`` is one turn of it and can
    be driven by hand in a test (after ``open()``), with no thread at all.
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
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.background_slice = background_slice
        self.vfs = vfs
        self.autocheckpoint = autocheckpoint
        self.setup = setup  # the connection_setup option
        self.ready: Future[None] = Future()  # done once the connection is open (or failed)
        # Set once the worker will run nothing more: it stopped, or was given up.
        self.stopped = threading.Event()
        self.turn = Turn()  # the current step, read by the watchdog
        self.thread_ident: int | None = None
        # Held while a batch runs: by this thread, or by a caller that runs its
        # own request in place because the worker was idle (see run_inline).
        self.writer = threading.Lock()
        self.inline_ident: int | None = None  # that caller's thread, while it runs
        # The thread holding a write block (Gateway.writer()) while it holds
        # it: a gateway call from there would wait for itself.
        self.holder_ident: int | None = None
        self.deadline: float | None = None  # that caller's deadline (monotonic)
        # Size of the last batch: 1 means callers come one at a time, so one
        # may run its request in place; under load batches grow and every
        # call goes through the worker (one fsync for many, not one each).
        self.last_batch = 1
        self._suspect = False  # an I/O error was seen: reopen after this turn
        self._busy_since = 0.0  # when the current wait for a lock began
        self._conn: apsw.Connection | None = None
        self._guard = TransactionGuard()
        self._inflight: list[Request] = []
        # The worker's own statements are prepared past the guard and kept in
        # apsw's statement cache, which is keyed by text. A per-process nonce
        # in each text means no caller's SQL can ever match a cached one.
        nonce = secrets.token_hex(8)
        savepoint = self._savepoint = f"sqlite_gateway_{nonce}"
        self._sql = {
            "begin": f"BEGIN IMMEDIATE /* sqlite_gateway {nonce} */",
            "commit": f"COMMIT /* sqlite_gateway {nonce} */",
            "rollback": f"ROLLBACK /* sqlite_gateway {nonce} */",
            "savepoint": f"SAVEPOINT {savepoint}",
            "release": f"RELEASE {savepoint}",
            "rollback_to": f"ROLLBACK TO {savepoint}",
        }
        # SQL text -> True when it holds exactly one statement (learned on its
        # first successful run). One statement is atomic by itself, so it
        # needs no savepoint of its own, and its rows need no statement
        # boundaries. Bounded in entries and bytes; _single is its plain dict.
        self._singles: TextMemo[bool] = TextMemo()
        self._single = self._singles.map

    # -- thread body ------------------------------------------------------

    def open(self) -> None:
        self._conn, self._guard = open_write_connection(
            self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout,
            vfs=self.vfs, autocheckpoint=self.autocheckpoint, setup=self.setup)
        # After the connection, so that SQLite reports a file it cannot open.
        if self._use_process_lock and self.process_lock is None and processlock_available():
            lock = ProcessLock(self.path)
            try:
                lock.open()
            except OSError as exc:  # a read-only folder, say: SQLite's locking still applies
                logger.warning("no process lock for %s (%s): writers of other processes "
                               "meet this one in SQLite's busy handler", self.path, exc)
            else:
                self.process_lock = lock
        self._guard.own_savepoint = self._savepoint
        self._arm()

    def _arm(self) -> None:
        """Install what the gateway owns on its connection (again after an
        exclusive fn, which gets the raw connection and may have changed it).

        - the guard (the authorizer that refuses transaction control;
          setting it makes SQLite expire every prepared statement, so none
          prepared without it runs again unchecked), and no connection-wide
          tracers (a row tracer would rewrite every later caller's rows);
        - a progress handler: a request run in its caller's thread has no
          other thread to stop it at its deadline, so SQLite asks this every
          _PROGRESS_STEPS VM steps;
        - a busy handler that waits for another process's lock up to
          ``busy_timeout``, as SQLite's own does, but no longer than that
          in-place caller's deadline.
        """
        conn = self._conn
        assert conn is not None
        conn.authorizer = self._guard
        conn.exec_trace = conn.row_trace = None
        conn.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
        conn.set_busy_handler(self._busy)

    def _past_deadline(self) -> bool:
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

    def _busy(self, tries: int) -> bool:
        """SQLite's busy handler: True to try the lock again after a short sleep."""
        now = time.monotonic()
        if tries == 0:
            self._busy_since = now
        limit = self._busy_since + self.busy_timeout
        deadline = self.deadline
        if deadline is not None and deadline < limit:
            limit = deadline
        if now >= limit:
            return False
        time.sleep(min(_BUSY_DELAYS[min(tries, len(_BUSY_DELAYS) - 1)], limit - now))
        return True

    def close(self) -> None:
        """Close the connection (SQLite rolls back an open transaction)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except apsw.Error as exc:
            # The checkpoint SQLite runs on close failed (an I/O error); the
            # connection is closed all the same, and the WAL keeps the commits.
            logger.warning("closing the write connection to %s: %s: %s",
                           self.path, type(exc).__name__, exc)
            conn.close(True)

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
        if not self.turn.interrupt(request, self._conn):
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
        self.deadline = deadline
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
            self.deadline = None

    def _serve(self, batch: list[Request]) -> bool:
        """Run one batch (writer lock held); False if the worker was given up."""
        self._inflight = batch
        self.last_batch = len(batch)
        try:
            if batch[0].kind is Kind.EXCLUSIVE:
                self._run_exclusive(batch[0])
            else:
                self._run_batch(batch)
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
        if self._suspect:
            self._suspect = False
            self._reopen("an I/O error in the last batch")
        return True

    def _reopen(self, cause: str, level: int = logging.WARNING) -> None:
        """Replace the connection after an I/O error or a failed ROLLBACK.

        Closing drops a half-done transaction; the new connection reads the
        file afresh (in WAL mode, frames that no commit covers are ignored),
        so no page cached before the fault is trusted. Per-connection settings
        made in ``run_exclusive`` (``PRAGMA max_page_count``...) are lost.

        Raises:
            apsw.Error: every attempt failed; the worker then dies.
        """
        logger.log(level, "worker on %s: reopening its connection after %s", self.path, cause)
        self.close()
        error: apsw.Error | None = None
        for delay in _REOPEN_DELAYS:
            time.sleep(delay)
            try:
                self.open()
                return
            except apsw.Error as exc:
                logger.warning("worker on %s: reopening failed: %s: %s",
                               self.path, type(exc).__name__, exc)
                error = exc
        assert error is not None
        raise error

    def _exec(self, sql: str) -> None:
        """Run one of the worker's own statements (``_sql`` texts), past the guard."""
        assert self._conn is not None
        self._guard.active = False
        try:
            self._conn.execute(sql)
        finally:
            self._guard.active = True
