"""Running one batch in one transaction: the worker's turn, step by step.

:class:`Batches`, a collaborator of :class:`~sqlite_gateway.worker.Worker`, runs
a batch once it is taken: ``BEGIN IMMEDIATE``, each request in its
own savepoint (or none, where the outcome cannot differ), ``COMMIT``, and
then the answers. The thread, its lifecycle and its faults stay in
``worker.py``; this module is what happens between BEGIN and the answers.

A failing request fails alone: SQLite undoes its statement, or its savepoint
is rolled back. Two cases undo the whole transaction instead, after which the
others run again in a new one: a statement that ends the transaction itself
(``OR ROLLBACK``, ``RAISE(ROLLBACK)``), and a failed statement that kept rows
(``OR FAIL``, a table's ``ON CONFLICT FAIL``, ``RAISE(FAIL)``), seen by the
change count. So a failed call never keeps anything, whatever ran before it.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from typing import TYPE_CHECKING

import apsw

from .connection import Connection, run_sql
from .errors import GatewayError
from .request import POST, WAIT, Kind, Request

if TYPE_CHECKING:
    from .processlock import ProcessLock
    from .requestqueue import RequestQueue
    from .stats import Stats
    from .turn import Turn
    from .writeconn import WriteConn

logger = logging.getLogger("sqlite_gateway.worker")

# After these errors the connection's state is not trusted: it is reopened.
# (After a failed fsync, what the OS kept of the written pages is unknown.)
RESET_AFTER = (apsw.IOError, apsw.CorruptError)

_FLUSH, _EXECUTE, _TRANSACTION, _WAIT = Kind.FLUSH, Kind.EXECUTE, Kind.TRANSACTION, WAIT


class Batches:
    """Runs a batch, once taken, in one transaction on the write connection.

    A collaborator of :class:`~sqlite_gateway.worker.Worker`, given what it
    uses: the write connection (``link``), the turn the watchdog reads, the
    queue (to give back what a background slice did not reach, and to see
    interactive work waiting), the stats, and the background slice in
    seconds. Runs on whichever thread holds the worker's writer lock; holds
    no state of its own between batches.
    """

    def __init__(self, link: WriteConn, turn: Turn, queue: RequestQueue, stats: Stats,
                 background_slice: float) -> None:
        self.link = link
        self.turn = turn
        self.queue = queue
        self.stats = stats
        self.background_slice = background_slice
        # The worker's kernel lock across processes (set by Worker.open(), when
        # it has one): let go at COMMIT, so other processes' writers go on
        # while this one answers.
        self.process_lock: ProcessLock | None = None

    def run_batch(self, batch: list[Request]) -> None:
        """BEGIN IMMEDIATE, each request (see :meth:`run_one`), COMMIT, answers.

        Never raises for a request's error (its caller gets it); an error of
        BEGIN/COMMIT/ROLLBACK themselves fails the batch, and an I/O error
        reopens the connection.

        Raises:
            GivenUp: the worker was given up meanwhile (see :class:`Turn`).
            apsw.Error: the connection could not be reopened (the worker dies).
        """
        link = self.link
        conn = link.conn
        assert conn is not None
        if all(request.kind is _FLUSH for request in batch):
            # Barriers alone: everything before them is already answered.
            self.answer([r for r in batch if r.claim()])
            return
        todo = batch
        reruns = 0
        queue, turn, single = self.queue, self.turn, link.single
        while True:
            ran: list[Request] = []  # claimed and run, their outcome kept on them
            committing = False
            try:
                self.turn.begin(None)  # BEGIN may wait up to busy_timeout for a lock
                link.exec(link.sql["begin"])
                offender = None
                # Background work holds the writer for one slice at most, and
                # yields early once interactive work waits: the requests not
                # started by then go back to the head of their lane (order kept).
                deadline = time.monotonic() + self.background_slice if todo[0].priority else 0.0
                alone = len(todo) == 1
                # A run of write-behind statements (post, submit: single, no
                # caller interrupts one by its deadline) shares one turn mark,
                # the first one's; the watchdog still stops whichever runs too
                # long. (Writer CPU per posted row, python -m benchmarks.worker_rows
                # --mode post, load average 4: 2.65 us with a mark per row, 1.94
                # with one per run.)
                marked = False
                index, count = 0, len(todo)
                while index < count:
                    request = todo[index]
                    if deadline and index and (time.monotonic() >= deadline
                                               or queue.interactive_waiting()):
                        queue.requeue(todo[index:])
                        todo = todo[:index]
                        break
                    index += 1
                    # A caller that gave up before its request started has
                    # cancelled it: skip it, it never runs.
                    if not request.claim():
                        continue
                    if (request.answer is not _WAIT and request.kind is _EXECUTE
                            and single.get(request.sql or "", False)):
                        if not marked:
                            turn.begin(request)
                            marked = True
                    elif marked:
                        turn.end_request()
                        marked = False
                    if not self.run_one(request, alone, marked):
                        # It ended the whole transaction (OR ROLLBACK,
                        # RAISE(ROLLBACK)), or failed keeping part of its
                        # writes: the work before it must be undone too.
                        offender = request
                        break
                    ran.append(request)
                if marked:
                    turn.end_request()
                if offender is None:
                    # An in-place caller's deadline ends here: SQLite consults the
                    # progress handler during COMMIT too, and a COMMIT it stopped
                    # would have been answered as a timeout once it had committed.
                    link.deadline = None
                    self.turn.begin(None, committing=True)
                    committing = True
                    link.exec(link.sql["commit"])
                    if self.process_lock is not None:  # other processes' writers may go on
                        self.process_lock.release()  # while this one answers
                elif not conn.get_autocommit():
                    link.exec(link.sql["rollback"])
            except apsw.Error as exc:
                self._fail_batch(todo, exc, committing, reruns)
                return
            if offender is None:
                self.stats.record_batch(len(ran), committed=True, reruns=reruns)
                self.answer(ran)
                return
            # Answer the offender, then run the others again in a new transaction.
            # Bounded: each round removes one request.
            if offender.error is None:
                offender.value, offender.error = None, GatewayError(
                    "the transaction fn rolled back the whole transaction and returned "
                    "normally; its writes before that are undone")
            self.stats.record_batch(len(ran) + 1, committed=False)
            self.answer([offender])
            reruns += 1
            todo = [r for r in todo if r is not offender and r.claim()]
            logger.debug("transaction undone because of %r; re-running %d requests",
                         offender, len(todo))
            if not todo:
                return

    def _fail_batch(self, todo: list[Request], exc: apsw.Error, committing: bool,
                    reruns: int) -> None:
        """BEGIN, RELEASE, COMMIT or ROLLBACK itself failed (busy past the busy
        timeout, disk full, I/O error): every request of the batch gets that
        error. After an I/O error on COMMIT the outcome is unknown (SQLite may
        have written the frames before a failed fsync); nothing is
        acknowledged, and the connection is reopened."""
        link = self.link
        conn = link.conn
        assert conn is not None
        reopen = isinstance(exc, RESET_AFTER)
        if not reopen and not conn.get_autocommit():
            try:
                link.exec(link.sql["rollback"])
            except apsw.Error as rollback_exc:
                logger.warning("worker on %s: ROLLBACK failed: %s: %s", link.path,
                               type(rollback_exc).__name__, rollback_exc)
                reopen = True
        self.stats.record_batch(len(todo), committed=False, reruns=reruns)
        # A flush marker still succeeds: the requests before it have failed,
        # and "committed or failed" is all a barrier promises.
        failed = [r for r in todo if r.claim()]
        # An I/O error from COMMIT (its sync, or the auto-checkpoint SQLite
        # runs inside it after the commit) leaves the outcome unknown: each
        # answer says so, or its caller would take it for "nothing kept".
        unknown = committing and isinstance(exc, RESET_AFTER)
        # Each caller gets an object of its own: a door adds notes to it
        # (bulk's), which must not reach the other callers.
        clean = _copy_error(exc)
        error: BaseException = exc
        for request in failed:
            if request.kind is not _FLUSH:
                if unknown:
                    _add_note(error, _MAY_BE_COMMITTED)
                request.value, request.error = None, error
                error = _copy_error(clean)
        self.answer(failed)
        if reopen:
            link.reopen(f"{type(exc).__name__}: {exc}")

    def run_one(self, request: Request, alone: bool = False, marked: bool = False) -> bool:
        """Run one request inside the batch's transaction; keep its value or
        error on it (answered after COMMIT). The one routine for every kind.

        Savepoints: a request gets one unless it is ``alone`` in its
        transaction (if it fails, the transaction is undone instead: the same
        outcome) or a known single statement. One statement is atomic: SQLite
        undoes it when it fails, except under OR FAIL (statement or table
        level) or a trigger's RAISE(FAIL), which keep the rows written before
        the error. The change count (``total_changes()``) sees those rows:
        then the transaction is undone and the others re-run, so a failed
        call never keeps anything, whatever ran before it. (Timeit, load
        average 4.8: a small INSERT 0.95 us alone, 2.29 between SAVEPOINT
        and RELEASE.)

        ``marked``: the caller has marked the turn for this request (a run
        of write-behind statements, each a known single statement); else
        this marks it.

        Returns False when the batch's transaction must be undone because of
        it: it ended the whole transaction (``OR ROLLBACK``), or it failed
        with no savepoint to undo it alone. Never raises apsw errors of its own.
        """
        kind = request.kind
        if kind is _FLUSH:
            request.value = request.error = None
            return True
        link = self.link
        conn = link.conn
        assert conn is not None
        sql = request.sql or ""
        # (marked: the caller found it a known single statement already.)
        single = marked or (kind is _EXECUTE and link.single.get(sql, False))
        guarded = not (single or alone)
        if guarded:
            # The guard lets the worker's own savepoint through (no exec switch).
            conn.execute(link.sql["savepoint"])
        before = conn.total_changes() if single else 0  # (the change-count rule's mark)
        turn = self.turn
        if not marked:
            turn.begin(request)
        try:
            if kind is _TRANSACTION:
                # The fn gets a conn handle of its own, valid for this call only.
                fn = request.fn
                assert fn is not None
                handle = Connection(conn, link.guard, link.singles)
                try:
                    if request.kwargs:
                        value = fn(handle, *request.args, **request.kwargs)
                    else:
                        value = fn(handle, *request.args)
                finally:
                    handle.close()
            elif single:
                if request.answer is POST:
                    # No Result, nobody reads it: an INSERT costs 0.96 us so,
                    # 1.70 through run_sql (timeit, load average 2.2).
                    for _row in conn.execute(sql, request.params):
                        pass  # (INSERT ... RETURNING: run it to its end)
                    value = None
                else:
                    value = run_sql(conn, link.guard, sql, request.params)
            elif kind is _EXECUTE:
                statements: list[str] = []
                value = run_sql(conn, link.guard, sql, request.params, statements=statements)
                link.singles.remember(sql, len(statements) == 1)
            else:
                value = run_sql(conn, link.guard, sql, request.params, many=True)
        except BaseException as exc:  # every failure goes back to its own caller
            if not marked:
                turn.end_request()
            link.suspect |= isinstance(exc, RESET_AFTER)
            request.value, request.error = None, exc
            if conn.get_autocommit():
                return False
            if guarded:
                conn.execute(link.sql["rollback_to"])
                conn.execute(link.sql["release"])
                return True
            return single and conn.total_changes() == before
        if not marked:
            turn.end_request()
        request.value, request.error = value, None
        if conn.get_autocommit():
            return False
        if guarded:
            conn.execute(link.sql["release"])
        return True

    def run_exclusive(self, request: Request) -> None:
        """Run fn(raw apsw connection) alone, outside any transaction.

        The fn may use explicit transactions; one it leaves open is rolled back.
        """
        link = self.link
        conn = link.conn
        assert conn is not None and request.fn is not None
        if not request.claim():
            return
        guard = link.guard
        guard.active = False
        guard.allowed = False
        self.turn.begin(request)
        try:
            request.value = request.fn(conn, *request.args, **(request.kwargs or {}))
            request.error = None
        except BaseException as exc:
            link.suspect |= isinstance(exc, RESET_AFTER)
            request.value, request.error = None, exc
        finally:
            self.turn.end_request()
            guard.active = True
        link.arm()  # fn had the raw connection: its handlers may be gone
        failed = None
        if not conn.get_autocommit():  # never leave a transaction open behind it
            try:
                link.exec(link.sql["rollback"])
            except apsw.Error as exc:
                failed = f"a failed ROLLBACK: {type(exc).__name__}: {exc}"
        self.answer([request])
        if failed:
            link.reopen(failed)
        elif guard.allowed:
            # Transaction control may now sit prepared in the statement cache,
            # where a caller's identical SQL would find it past the guard.
            link.reopen("transaction control in an exclusive fn", logging.DEBUG)

    def answer(self, requests: list[Request]) -> None:
        """Answer each request with the outcome kept on it (after its COMMIT).

        The worker's answers; the fail-everything path (``fail_pending``) and a
        timed-out caller's give-up are the others, and the first answer wins.
        """
        now = time.monotonic()
        errors = 0
        latencies = []
        for request in requests:
            if request.error is not None:
                errors += 1
                request.settle()
            elif request.answer is not POST:  # a posted row that committed: nobody to tell
                request.settle()
            latencies.append(now - request.enqueued)
        self.stats.record_answers(latencies, errors)
        # Break reference cycles: an exception's frames hold this list.
        requests.clear()


def _copy_error(exc: BaseException) -> BaseException:
    """``exc`` for one more caller: the same class, arguments, attributes and
    traceback, in an object of its own (its notes list not shared)."""
    try:
        clone = copy.copy(exc)
    except Exception:  # an exception type that cannot be copied: share it
        return exc
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        clone.__notes__ = list(notes)  # type: ignore[attr-defined]
    clone.__cause__, clone.__context__ = exc.__cause__, exc.__context__
    return clone.with_traceback(exc.__traceback__)


_MAY_BE_COMMITTED = ("sqlite_gateway: the COMMIT of this request's batch failed with an I/O "
                     "error, after SQLite may have written it: it may be committed (all of "
                     "it or none of it)")


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # no add_note() before 3.11: the same attribute, by hand
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
