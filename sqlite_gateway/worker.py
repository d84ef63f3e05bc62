"""The worker: the one thread that owns the write connection.

A request's path: caller -> ``RequestQueue.put`` -> ``Worker.run_once`` takes
the batch -> ``BEGIN IMMEDIATE`` -> per request ``SAVEPOINT``, run,
``RELEASE`` (or ``ROLLBACK TO``) -> ``COMMIT`` -> every future answered.
No caller hears anything before the COMMIT has returned, so an answer means
the data is committed (and, with ``synchronous=FULL``, on disk).

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
from concurrent.futures import Future
from typing import Any

import apsw

from .connection import Connection, TransactionGuard, open_write_connection, run_sql
from .errors import GatewayClosed, GatewayError
from .request import POST, STOP, WAIT, Kind, Request
from .requestqueue import RequestQueue, fail_pending
from .stats import Stats
from .turn import GivenUp, Turn

logger = logging.getLogger(__name__)

_SINGLE_MEMO = 4096  # SQL texts remembered as single statements
# After these errors the connection's state is not trusted: it is reopened.
# (After a failed fsync, what the OS kept of the written pages is unknown.)
_RESET_AFTER = (apsw.IOError, apsw.CorruptError)
_REOPEN_DELAYS = (0.0, 0.1, 1.0)  # seconds before each attempt to reopen; then the worker dies
_PROGRESS_STEPS = 1000  # SQLite VM steps between two looks at an in-place caller's deadline


class Worker:
    """Runs batches of requests on its own connection.

    ``run()`` is the thread's target; ``run_once()`` is one turn of it and can
    be driven by hand in a test (after ``open()``), with no thread at all.
    """

    def __init__(self, path: str, queue: RequestQueue, stats: Stats, *,
                 batch_max: int, synchronous: str, busy_timeout: float,
                 vfs: str | None = None, background_slice: float = 0.01,
                 autocheckpoint: int = 1000) -> None:
        self.path = path
        self.queue = queue
        self.stats = stats
        self.batch_max = batch_max
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.background_slice = background_slice
        self.vfs = vfs
        self.autocheckpoint = autocheckpoint
        self.ready: Future[None] = Future()  # done once the connection is open (or failed)
        # Set once the worker will run nothing more: it stopped, or was given up.
        self.stopped = threading.Event()
        self.turn = Turn()  # the current step, read by the watchdog
        self.thread_ident: int | None = None
        # Held while a batch runs: by this thread, or by a caller that runs its
        # own request in place because the worker was idle (see run_inline).
        self.writer = threading.Lock()
        self.inline_ident: int | None = None  # that caller's thread, while it runs
        self.deadline: float | None = None  # that caller's deadline (monotonic)
        # Size of the last batch: 1 means callers come one at a time, so one
        # may run its request in place; under load batches grow and every
        # call goes through the worker (one fsync for many, not one each).
        self.last_batch = 1
        self._suspect = False  # an I/O error was seen: reopen after this turn
        self._conn: apsw.Connection | None = None
        self._guard = TransactionGuard()
        self._inflight: list[Request] = []
        # The worker's own statements are prepared past the guard and kept in
        # apsw's statement cache, which is keyed by text. A per-process nonce
        # in each text means no caller's SQL can ever match a cached one.
        nonce = secrets.token_hex(8)
        savepoint = f"sqlite_gateway_{nonce}"
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
        # needs no savepoint of its own. Bounded: cleared when full.
        self._single: dict[str, bool] = {}

    # -- thread body ------------------------------------------------------

    def open(self) -> None:
        self._conn, self._guard = open_write_connection(
            self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout,
            vfs=self.vfs, autocheckpoint=self.autocheckpoint)
        # A request run in its caller's thread has no other thread to stop it
        # at its deadline: SQLite asks this every _PROGRESS_STEPS VM steps.
        self._conn.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)

    def _past_deadline(self) -> bool:
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

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
            batch = self.queue.take(self.batch_max)
            if batch is STOP:
                return False
            assert isinstance(batch, list)
            return self._serve(batch) if batch else True

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
        try:
            return self._serve([request])
        except BaseException as exc:
            logger.critical("sqlite_gateway writer failed in a caller's thread", exc_info=True)
            self.give_up(f"writer failed: {type(exc).__name__}: {exc}")
            return False
        finally:
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
            fail_pending(batch, lambda: GatewayClosed(f"gateway is broken: {self.death}"))
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

    def _run_batch(self, batch: list[Request]) -> None:
        conn = self._conn
        assert conn is not None
        if all(request.kind is Kind.FLUSH for request in batch):
            # Barriers alone: everything before them is already answered.
            self._answer([r for r in batch if r.claim()])
            return
        todo = batch
        reruns = 0
        while True:
            ran: list[Request] = []  # claimed and run, their outcome kept on them
            try:
                self.turn.begin(None)  # BEGIN may wait up to busy_timeout for a lock
                self._exec(self._sql["begin"])
                offender = None
                # Background work holds the writer for one slice at most, and
                # yields early once interactive work waits: the requests not
                # started by then go back to the head of their lane (order kept).
                deadline = time.monotonic() + self.background_slice if todo[0].priority else 0.0
                # A request alone in its transaction needs no savepoint of its
                # own: if it fails, the whole transaction is undone instead,
                # with the same outcome (saves two statements per call when
                # the gateway is not busy).
                alone = len(todo) == 1
                index, count = 0, len(todo)
                while index < count:
                    request = todo[index]
                    if deadline and index and (time.monotonic() >= deadline
                                               or self.queue.interactive_waiting()):
                        self.queue.requeue(todo[index:])
                        todo = todo[:index]
                        break
                    if (request.answer is not WAIT and request.kind is Kind.EXECUTE
                            and self._single.get(request.sql)):  # type: ignore[arg-type]
                        index, offender = self._run_write_behind(todo, index, ran, deadline)
                        if offender is not None:
                            break
                        continue
                    index += 1
                    # A caller that gave up before its request started has
                    # cancelled it: skip it, it never runs.
                    if not request.claim():
                        continue
                    if not self._run_one(request, alone):
                        # It ended the whole transaction (OR ROLLBACK,
                        # RAISE(ROLLBACK)), or failed keeping part of its
                        # writes: the work before it must be undone too.
                        offender = request
                        break
                    ran.append(request)
                if offender is None:
                    self.turn.begin(None, committing=True)
                    self._exec(self._sql["commit"])
                elif not conn.get_autocommit():
                    self._exec(self._sql["rollback"])
            except apsw.Error as exc:
                # BEGIN, RELEASE, COMMIT or ROLLBACK itself failed (busy past
                # the busy timeout, disk full, I/O error): every request of the
                # batch gets that error. After an I/O error on COMMIT the outcome
                # is unknown (SQLite may have written the frames before a failed
                # fsync); nothing is acknowledged, and the connection is reopened.
                reopen = isinstance(exc, _RESET_AFTER)
                if not reopen and not conn.get_autocommit():
                    try:
                        self._exec(self._sql["rollback"])
                    except apsw.Error as rollback_exc:
                        logger.warning("worker on %s: ROLLBACK failed: %s: %s", self.path,
                                       type(rollback_exc).__name__, rollback_exc)
                        reopen = True
                self.stats.record_batch(len(todo), committed=False, reruns=reruns)
                # A flush marker still succeeds: the requests before it have failed,
                # and "committed or failed" is all a barrier promises.
                failed = [r for r in todo if r.claim()]
                for request in failed:
                    if request.kind is not Kind.FLUSH:
                        request.value, request.error = None, exc
                self._answer(failed)
                if reopen:
                    self._reopen(f"{type(exc).__name__}: {exc}")
                return
            if offender is None:
                self.stats.record_batch(len(ran), committed=True, reruns=reruns)
                self._answer(ran)
                return
            # Answer the offender, then run the others again in a new transaction.
            # Bounded: each round removes one request.
            if offender.error is None:
                offender.value, offender.error = None, GatewayError(
                    "the transaction fn rolled back the whole transaction and returned "
                    "normally; its writes before that are undone")
            self.stats.record_batch(len(ran) + 1, committed=False)
            self._answer([offender])
            reruns += 1
            todo = [r for r in todo if r is not offender and r.claim()]
            logger.debug("transaction undone because of %r; re-running %d requests",
                         offender, len(todo))
            if not todo:
                return

    def _run_one(self, request: Request, alone: bool = False) -> bool:
        """Run one request; keep its value or error on it (answered after COMMIT).

        Returns False when the batch's transaction must be undone because of
        it: it ended the whole transaction, or it failed after writing rows
        that its failure did not undo, or it failed ``alone`` (the only
        request of its transaction, run without a savepoint). Never raises
        apsw errors of its own.
        """
        kind = request.kind
        if kind is Kind.FLUSH:
            request.value = request.error = None
            return True
        conn = self._conn
        assert conn is not None
        turn = self.turn
        if alone and kind is not Kind.EXECUTE:
            turn.begin(request)
            try:
                if kind is Kind.TRANSACTION:
                    request.value = self._call_fn(request, conn)
                else:
                    request.value = run_sql(conn, self._guard, request.sql or "",
                                            request.params, many=True)
                request.error = None
                return not conn.get_autocommit()
            except BaseException as exc:
                self._suspect |= isinstance(exc, _RESET_AFTER)
                request.value, request.error = None, exc
                return False
            finally:
                turn.end_request()
        if kind is Kind.EXECUTE and self._single.get(request.sql):  # type: ignore[arg-type]
            # One statement, no savepoint: SQLite undoes a failed statement by
            # itself, except under OR FAIL (statement or table level) or a
            # trigger's RAISE(FAIL), which keep the rows written before the
            # error. total_changes() sees those rows: then the transaction is
            # undone and the others re-run, so a failed call never keeps
            # anything, whatever ran before it.
            before = conn.total_changes()
            turn.begin(request)
            try:
                if request.answer is POST:  # no Result to build: nobody reads it
                    for _row in conn.execute(request.sql or "", request.params):
                        pass  # (INSERT ... RETURNING: run it to its end)
                else:
                    request.value = run_sql(conn, self._guard, request.sql or "",
                                            request.params)
                request.error = None
                return not conn.get_autocommit()
            except BaseException as exc:
                self._suspect |= isinstance(exc, _RESET_AFTER)
                request.value, request.error = None, exc
                return conn.total_changes() == before and not conn.get_autocommit()
            finally:
                turn.end_request()
        self._exec(self._sql["savepoint"])
        turn.begin(request)
        try:
            if kind is Kind.TRANSACTION:
                value: Any = self._call_fn(request, conn)
            elif kind is Kind.EXECUTE:
                statements: list[str] = []

                def record(_cursor: apsw.Cursor, statement: str, _bindings: Any) -> bool:
                    statements.append(statement)
                    return True
                value = run_sql(conn, self._guard, request.sql or "", request.params,
                                tracer=record)
                if len(self._single) >= _SINGLE_MEMO:
                    self._single.clear()
                self._single[request.sql or ""] = len(statements) == 1
            else:
                value = run_sql(conn, self._guard, request.sql or "", request.params, many=True)
        except BaseException as exc:  # every failure goes back to its own caller
            turn.end_request()
            self._suspect |= isinstance(exc, _RESET_AFTER)
            request.value, request.error = None, exc
            if conn.get_autocommit():
                return False
            self._exec(self._sql["rollback_to"])
            self._exec(self._sql["release"])
            return True
        turn.end_request()
        request.value, request.error = value, None
        if conn.get_autocommit():
            return False
        self._exec(self._sql["release"])
        return True

    def _run_write_behind(self, todo: list[Request], start: int, ran: list[Request],
                          deadline: float) -> tuple[int, Request | None]:
        """Run the write-behind single statements (``post``, ``submit``) from
        ``todo[start]`` on, in one tight loop; return (the index to go on
        from, the offender that spoils the transaction or None).

        The same outcome as :meth:`_run_one` for each, at a fraction of its
        cost per row (a page-view log posts hundreds of thousands a second):
        one turn mark for the whole run, no savepoint (one statement is
        atomic; one that keeps rows after failing is caught by the change
        count), and for a posted row no Result. Nobody waits on these with a
        deadline, so no single one of them is interrupted by its caller; the
        watchdog still stops whichever statement runs too long.
        """
        conn = self._conn
        assert conn is not None
        single, guard, queue = self._single, self._guard, self.queue
        execute, total_changes = conn.execute, conn.total_changes
        index, count = start, len(todo)
        self.turn.begin(todo[start])
        try:
            while index < count:
                request = todo[index]
                if (request.answer is WAIT or request.kind is not Kind.EXECUTE
                        or not single.get(request.sql)):  # type: ignore[arg-type]
                    break
                if deadline and index > start and (time.monotonic() >= deadline
                                                   or queue.interactive_waiting()):
                    break  # the caller requeues the rest
                index += 1
                if not request.claim():
                    continue
                before = total_changes()
                try:
                    if request.answer is POST:  # no Result to build: nobody reads it
                        for _row in execute(request.sql, request.params):  # type: ignore[arg-type]
                            pass  # (INSERT ... RETURNING: run it to its end)
                    else:
                        request.value = run_sql(conn, guard, request.sql,  # type: ignore[arg-type]
                                                request.params)
                    request.error = None
                except BaseException as exc:
                    self._suspect |= isinstance(exc, _RESET_AFTER)
                    request.value, request.error = None, exc
                    if total_changes() != before or conn.get_autocommit():
                        return index, request  # kept part of its writes, or ended it all
                ran.append(request)
            return index, None
        finally:
            self.turn.end_request()

    def _call_fn(self, request: Request, conn: apsw.Connection) -> Any:
        """Call a transaction fn with its own conn handle, valid for this call only."""
        handle = Connection(conn, self._guard)
        try:
            assert request.fn is not None
            if request.kwargs:
                return request.fn(handle, *request.args, **request.kwargs)
            return request.fn(handle, *request.args)
        finally:
            handle.close()

    def _run_exclusive(self, request: Request) -> None:
        """Run fn(raw apsw connection) alone, outside any transaction.

        The fn may use explicit transactions; one it leaves open is rolled back.
        """
        conn = self._conn
        assert conn is not None and request.fn is not None
        if not request.claim():
            return
        guard = self._guard
        guard.active = False
        guard.allowed = False
        self.turn.begin(request)
        try:
            request.value = request.fn(conn, *request.args, **(request.kwargs or {}))
            request.error = None
        except BaseException as exc:
            self._suspect |= isinstance(exc, _RESET_AFTER)
            request.value, request.error = None, exc
        finally:
            self.turn.end_request()
            guard.active = True
        failed = None
        if not conn.get_autocommit():  # never leave a transaction open behind it
            try:
                self._exec(self._sql["rollback"])
            except apsw.Error as exc:
                failed = f"a failed ROLLBACK: {type(exc).__name__}: {exc}"
        self._answer([request])
        if failed:
            self._reopen(failed)
        elif guard.allowed:
            # Transaction control may now sit prepared in the statement cache,
            # where a caller's identical SQL would find it past the guard.
            self._reopen("transaction control in an exclusive fn", logging.DEBUG)

    def _answer(self, requests: list[Request]) -> None:
        """Answer each request with the outcome kept on it (after its COMMIT).

        The worker's answers; the fail-everything path (``fail_pending``) and a
        timed-out caller's give-up are the others, and the first answer wins.
        """
        now = time.monotonic()
        errors = 0
        for request in requests:
            error = request.error
            if error is None:
                if request.answer is not POST:  # nobody waits for a posted write
                    request.set_result(request.value)
            else:
                errors += 1
                request.set_exception(error)
        self.stats.record_answers([now - r.enqueued for r in requests], errors)
        # Break reference cycles: an exception's frames hold this list.
        requests.clear()
