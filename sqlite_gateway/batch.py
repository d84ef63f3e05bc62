"""Running one batch in one transaction: the worker's turn, step by step.

:class:`Batches` holds the part of :class:`~sqlite_gateway.worker.Worker`
that runs a batch once it is taken: ``BEGIN IMMEDIATE``, each request in its
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
from typing import TYPE_CHECKING, Any

import apsw

from .connection import Connection, TransactionGuard, run_sql
from .errors import GatewayError
from .memo import TextMemo
from .request import POST, WAIT, Kind, Request

if TYPE_CHECKING:
    from .processlock import ProcessLock
    from .requestqueue import RequestQueue
    from .stats import Stats
    from .turn import Turn

logger = logging.getLogger("sqlite_gateway.worker")

# After these errors the connection's state is not trusted: it is reopened.
# (After a failed fsync, what the OS kept of the written pages is unknown.)
RESET_AFTER = (apsw.IOError, apsw.CorruptError)


class Batches:
    """The batch-running half of the worker (a mixin of :class:`Worker`).

    Uses the worker's connection, guard, turn, queue, stats and statement
    texts; runs on whichever thread holds the writer lock.
    """

    path: str
    queue: RequestQueue
    stats: Stats
    turn: Turn
    background_slice: float
    deadline: float | None
    process_lock: ProcessLock | None
    _conn: apsw.Connection | None
    _guard: TransactionGuard
    _suspect: bool
    _sql: dict[str, str]
    _single: dict[str, bool]
    _singles: TextMemo[bool]

    def _exec(self, sql: str) -> None:
        raise NotImplementedError

    def _reopen(self, cause: str, level: int = logging.WARNING) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        raise NotImplementedError

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
            committing = False
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
                    # An in-place caller's deadline ends here: SQLite consults the
                    # progress handler during COMMIT too, and a COMMIT it stopped
                    # would have been answered as a timeout once it had committed.
                    self.deadline = None
                    self.turn.begin(None, committing=True)
                    committing = True
                    self._exec(self._sql["commit"])
                    if self.process_lock is not None:  # other processes' writers may go on
                        self.process_lock.release()  # while this one answers
                elif not conn.get_autocommit():
                    self._exec(self._sql["rollback"])
            except apsw.Error as exc:
                # BEGIN, RELEASE, COMMIT or ROLLBACK itself failed (busy past
                # the busy timeout, disk full, I/O error): every request of the
                # batch gets that error. After an I/O error on COMMIT the outcome
                # is unknown (SQLite may have written the frames before a failed
                # fsync); nothing is acknowledged, and the connection is reopened.
                reopen = isinstance(exc, RESET_AFTER)
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
                # An I/O error from COMMIT (its sync, or the auto-checkpoint SQLite
                # runs inside it after the commit) leaves the outcome unknown: each
                # answer says so, or its caller would take it for "nothing kept".
                unknown = committing and isinstance(exc, RESET_AFTER)
                # Each caller gets an object of its own: a door adds notes to it
                # (bulk's), which must not reach the other callers.
                clean = _copy_error(exc)
                error: BaseException = exc
                for request in failed:
                    if request.kind is not Kind.FLUSH:
                        if unknown:
                            _add_note(error, _MAY_BE_COMMITTED)
                        request.value, request.error = None, error
                        error = _copy_error(clean)
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
                self._suspect |= isinstance(exc, RESET_AFTER)
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
            # (Write-behind ones never come here: _run_write_behind runs them.)
            before = conn.total_changes()
            turn.begin(request)
            try:
                request.value = run_sql(conn, self._guard, request.sql or "", request.params)
                request.error = None
                return not conn.get_autocommit()
            except BaseException as exc:
                self._suspect |= isinstance(exc, RESET_AFTER)
                request.value, request.error = None, exc
                return conn.total_changes() == before and not conn.get_autocommit()
            finally:
                turn.end_request()
        sql = self._sql
        # The guard lets the worker's own savepoint through (no _exec switch):
        # this runs once per request, twice with RELEASE.
        conn.execute(sql["savepoint"])
        turn.begin(request)
        try:
            if kind is Kind.TRANSACTION:
                handle = Connection(conn, self._guard, self._singles)  # _call_fn(), inlined
                try:
                    assert request.fn is not None
                    if request.kwargs:
                        value: Any = request.fn(handle, *request.args, **request.kwargs)
                    else:
                        value = request.fn(handle, *request.args)
                finally:
                    handle._open = False
            elif kind is Kind.EXECUTE:
                statements: list[str] = []
                value = run_sql(conn, self._guard, request.sql or "", request.params,
                                statements=statements)
                self._singles.remember(request.sql or "", len(statements) == 1)
            else:
                value = run_sql(conn, self._guard, request.sql or "", request.params, many=True)
        except BaseException as exc:  # every failure goes back to its own caller
            turn.end_request()
            self._suspect |= isinstance(exc, RESET_AFTER)
            request.value, request.error = None, exc
            if conn.get_autocommit():
                return False
            conn.execute(sql["rollback_to"])
            conn.execute(sql["release"])
            return True
        turn.end_request()
        request.value, request.error = value, None
        if conn.get_autocommit():
            return False
        conn.execute(sql["release"])
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
                    self._suspect |= isinstance(exc, RESET_AFTER)
                    request.value, request.error = None, exc
                    if total_changes() != before or conn.get_autocommit():
                        return index, request  # kept part of its writes, or ended it all
                ran.append(request)
            return index, None
        finally:
            self.turn.end_request()

    def _call_fn(self, request: Request, conn: apsw.Connection) -> Any:
        """Call a transaction fn with its own conn handle, valid for this call only."""
        handle = Connection(conn, self._guard, self._singles)
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
            self._suspect |= isinstance(exc, RESET_AFTER)
            request.value, request.error = None, exc
        finally:
            self.turn.end_request()
            guard.active = True
        self._arm()  # fn had the raw connection: its handlers may be gone
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
                answer = request.answer
                if answer is WAIT:
                    # Request.set_result(), inlined (once per request): the value
                    # is on the request already; the first to take _done answers.
                    if request._done.acquire(False):  # type: ignore[union-attr]
                        request._answered.release()  # type: ignore[union-attr]
                elif answer is not POST:  # nobody waits for a posted write
                    request.set_result(request.value)
            else:
                errors += 1
                request.set_exception(error)
        self.stats.record_answers([now - r.enqueued for r in requests], errors)
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
