"""Read-only connections that serve reads beside the writer (WAL).

Two ways to run them, chosen by ``Gateway(read_mode=...)``:

- ``"inline"`` (:class:`ReaderPool`): up to ``readers`` connections shared
  by every calling thread. A thread keeps one while it lives, or (past
  ``readers`` threads) takes a free one for one read; it runs the read in
  place (no hand-off); when all are busy it waits in line. Any number of
  threads can read: a web app need not tell the gateway its thread count.
- ``"threads"`` (:class:`ReaderLanes`): ``readers`` threads, each owning one
  connection for its whole life, fed by a queue (one hand-off each way, like
  the writer; for callers that must not block, such as an event loop).

Routing asks SQLite, not the SQL text: the first time a text is seen, an
exec tracer lets each statement run only if ``sqlite3_stmt_readonly`` says
it cannot write; a text SQLite judged read-only is remembered and runs
untraced from then on, and anything else goes to the writer. Connections are
opened read-only as well, so a write cannot slip through a reader even if
routing were wrong. Read-your-writes holds because each read is a fresh
statement in autocommit (a fresh WAL snapshot) that starts after the
caller's earlier answers, which came after their COMMIT.

Deadlines: SQLite calls a progress handler every ``_PROGRESS_STEPS`` (1,000)
VM steps; past the caller's deadline, or once the gateway closes, it stops the
statement (``apsw.InterruptError``), so a runaway read never outlives its
caller's patience and ``close()`` never waits for one.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import apsw

from .connection import TransactionGuard, _missing_parameter, run_read, run_sql
from .errors import GatewayClosed, RequestTimeout
from .memo import TextMemo
from .request import FUTURE, STOP, Kind, Request, wait_for
from .requestqueue import RequestQueue, fail_pending
from .result import Result, _new, _set_columns, _set_rows

logger = logging.getLogger(__name__)

_PATIENCE = 0.02  # seconds first in line before readers are handed to it, no newcomer first
_PROGRESS_STEPS = 1000  # VM steps between two looks at the deadline (a point read takes ~100)
_CLOSE_WAIT = 5.0  # seconds close() waits for reads in progress to stop
_monotonic = time.monotonic

Setup = Callable[[apsw.Connection], object]  # the connection_setup option


class _ReadGuard(TransactionGuard):
    """Refuses here what the writer refuses (transaction control, ATTACH, the
    settings in ``_OWNED_PRAGMAS``), so a refused setting is never applied on a
    reader either; sends to the writer any other PRAGMA that sets a value."""

    __slots__ = ("to_writer",)

    def __init__(self) -> None:
        super().__init__()
        self.to_writer = False

    def __call__(self, op: int, p1: str | None, p2: str | None,
                 db: str | None, trigger: str | None) -> int:
        verdict = super().__call__(op, p1, p2, db, trigger)
        if verdict == apsw.SQLITE_OK and op == apsw.SQLITE_PRAGMA and p2 is not None:
            self.to_writer = True
            return apsw.SQLITE_DENY
        return verdict


class Reader:
    """One read-only connection, used by one thread at a time."""

    def __init__(self, path: str, busy_timeout: float, vfs: str | None,
                 known_reads: TextMemo[bool], setup: Setup | None = None) -> None:
        self.stop = False  # set by close(): the running statement stops
        self.closed = False
        self.deadline: float | None = None  # the running read's caller's deadline
        self.cancel: threading.Event | None = None  # set: the running read's caller gave up
        self.served = 0  # reads answered here
        self.passed = 0  # texts SQLite judged writes, sent on to the writer
        # Held while a thread uses this reader (see ReaderPool); owner: the
        # token of the thread that keeps it (None: the pool's to lend).
        self.lock = threading.Lock()
        self.owner: object | None = None
        self.running = False  # a statement runs now (close() waits for it to stop)
        # Shared by the pool: texts SQLite judged read-only (True: one statement).
        self._known = known_reads
        self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY, vfs=vfs)
        self.conn.set_busy_timeout(int(busy_timeout * 1000))
        # As on the writer, so that reading the setting here tells the truth
        # (a migration tool that reads foreign_keys=0 skips turning them off
        # before a table rebuild, and the writer's DROP TABLE then cascades).
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.guard = _ReadGuard()
        self.conn.authorizer = self.guard
        self.conn.set_progress_handler(self._should_stop, _PROGRESS_STEPS)
        if setup is not None:
            try:
                setup(self.conn)  # the connection_setup option: functions, collations...
            except BaseException:
                self.conn.close()
                raise
        # The lean read's cursor, used again and again: apsw makes a cursor per
        # Connection.execute and tracks it (about 0.4 us of a 3.6 us point read).
        self.cursor = self.conn.cursor()

    def _should_stop(self) -> bool:
        deadline, cancel = self.deadline, self.cancel
        return self.stop or (deadline is not None and time.monotonic() >= deadline) or (
            cancel is not None and cancel.is_set())

    def _only_reads(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        if cursor.is_readonly:
            return True
        self.guard.to_writer = True
        return False  # apsw raises ExecTraceAbort before the statement steps

    def read(self, sql: str, params: Any, deadline: float | None,
             timeout: float | None, hang_limit: float | None = None,
             cancel: threading.Event | None = None) -> Result | None:
        """The statement's Result, or None when SQLite says it must run on the writer.

        Args:
            deadline: when the caller stops waiting (monotonic), or None.
            timeout: the caller's timeout, for the error message.
            hang_limit: when the read has run past the gateway's
                ``hang_timeout`` (monotonic), or None: then it is stopped
                with ``apsw.InterruptError``, as the watchdog stops the writer.
            cancel: once set (by a caller that gave up: a cancelled task),
                the running statement is stopped (``RequestTimeout``).

        Raises:
            RequestTimeout: stopped at ``deadline`` (nothing to undo: a read).
            GatewayClosed: stopped because the gateway is closing.
            apsw.Error: SQLite's own error.
        """
        known = self._known.map.get(sql)  # None: not seen; True: one statement; False: several
        self.guard.to_writer = False
        if hang_limit is not None and (deadline is None or hang_limit < deadline):
            self.deadline = hang_limit
        else:
            self.deadline = deadline
        self.cancel = cancel
        statements: list[str] | None = None
        self.running = True
        try:
            if known:
                result = run_read(self.conn, sql, params)
            else:
                statements = []
                result = run_read(self.conn, sql, params, statements,
                                  None if known is not None else self._only_reads)
        except (apsw.ExecTraceAbort, apsw.AuthError, apsw.ReadOnlyError) as exc:
            # ReadOnlyError: SQLite judged the statement read-only, yet it wrote
            # (PRAGMA optimize runs ANALYZE): nothing was written here (the
            # connection is read-only), and the writer can run it.
            if self.guard.to_writer or known is not None or isinstance(exc, apsw.ReadOnlyError):
                self._known.forget(sql)
                self.passed += 1
                return None
            if self.guard.refused or self.guard.refused_pragma is not None:
                # The guard's own refusals (transaction control, a setting),
                # with the same errors as on the writer.
                return run_sql(self.conn, self.guard, sql, params)
            raise
        except apsw.SQLError:
            if known is not None:
                raise
            # A text seen for the first time that this reader could not prepare:
            # its copy of the schema may predate a change the writer made
            # (SQLite re-reads it for "no such table", not for every error, e.g.
            # an upsert's ON CONFLICT target on a new index). The writer decides.
            self.passed += 1
            return None
        except apsw.InterruptError as exc:
            raise self.translate(exc, deadline, timeout, cancel, params) from None
        finally:
            self.running = False
            self.deadline = None
            self.cancel = None
        if known is None:
            assert statements is not None
            self._known.remember(sql, len(statements) == 1)
        self.served += 1
        return result

    def known_read(self, sql: str, params: Any, columns: tuple[str, ...],
                   deadline: float | None, timeout: float | None,
                   hang_limit: float | None) -> Result | None:
        """:meth:`read` for a text known to be one read-only statement that
        returns ``columns``: one ``fetchall`` on this reader's own cursor. None
        when SQLite judged it read-only, yet it writes (``PRAGMA optimize``):
        nothing was written (the connection is read-only). Raises as :meth:`read`."""
        self.deadline = hang_limit if hang_limit is not None and (
            deadline is None or hang_limit < deadline) else deadline
        self.running = True
        try:
            rows = self.cursor.execute(sql, params).fetchall()
        except BaseException as exc:
            self.renew_cursor()
            if isinstance(exc, apsw.ReadOnlyError):
                return None
            raise self.translate(exc, deadline, timeout, None, params) from None
        finally:
            self.running = False
            self.deadline = None
        self.served += 1
        result: Result = _new(_ReadResult)
        _set_rows(result, tuple(rows))
        _set_columns(result, columns)
        return result

    def renew_cursor(self) -> None:
        """Replace the lean read's cursor after an error: closing it ends the
        statement (and its read transaction) an error may have left open."""
        try:
            self.cursor.close()
        except apsw.Error as exc:  # its statement's error was the caller's already
            logger.debug("closing a reader's cursor: %s: %s", type(exc).__name__, exc)
        try:
            self.cursor = self.conn.cursor()
        except apsw.Error:  # the connection is closed: this reader is not used again
            pass

    def translate(self, exc: BaseException, deadline: float | None, timeout: float | None,
                  cancel: threading.Event | None, params: Any) -> BaseException:
        """The error a caller gets for ``exc``, raised by a statement on this
        reader: an interrupt means the gateway closed, or the caller's
        deadline passed (or it gave up); a missing named parameter is named."""
        if isinstance(exc, apsw.InterruptError):
            if self.stop:
                return GatewayClosed("gateway closed while this read ran")
            if (deadline is not None and time.monotonic() >= deadline) or (
                    cancel is not None and cancel.is_set()):
                return RequestTimeout(timeout or 0.0, started=True, interrupted=True)
        if isinstance(exc, KeyError):
            return _missing_parameter(exc, params, False)
        return exc

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close()
        except apsw.Error as exc:  # closing a read-only connection: nothing to lose
            logger.debug("closing a reader: %s: %s", type(exc).__name__, exc)


class _ReadResult(Result):
    """A lean read's Result: nothing changes on a reader, so ``rowcount`` and
    ``lastrowid`` are 0 for every one of them, as class attributes (they
    shadow the slots): two stores fewer per read (0.15 of the 0.6 us a
    Result cost per point read). Behaves as a Result in every way."""

    __slots__ = ()
    rowcount = 0
    lastrowid = 0


class _Owner:
    """What a thread keeps (in the pool's ``threading.local``) while it owns a
    reader. CPython drops a thread's locals when the thread ends; this
    object's ``__del__`` then gives the reader back to the pool."""

    __slots__ = ("reader", "pool", "token")
    reader: Reader

    def __init__(self, reader: Reader, pool: ReaderPool) -> None:
        self.reader = reader
        self.pool = weakref.ref(pool)  # the pool may be collected before the thread ends
        # What the reader keeps of its owner: not the owner itself, or the two
        # would form a cycle that outlives the thread.
        self.token = object()

    def __del__(self) -> None:
        pool = self.pool()
        if pool is not None:
            try:
                pool._orphaned(self)
            except Exception:  # at interpreter exit, say: the pool closes its readers itself
                logger.debug("giving back a dead thread's reader", exc_info=True)


class _Waiter:
    """A thread in line for a reader, blocked on ``ready`` (held from the
    start). The pool wakes it by releasing ``ready``, once (``woken``), after
    either handing it a reader (``reader`` set: still in use, its lock passes
    to this thread), or putting one on the free stack for it to try for, or
    closing. ``woken`` and ``reader`` are guarded by the pool's ``_lock``."""

    __slots__ = ("ready", "reader", "since", "woken")

    def __init__(self, since: float) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.reader: Reader | None = None
        self.since = since  # when it got in line (monotonic)
        self.woken = False


def _names_fixed_by_text(sql: str) -> bool:
    """True when the column names a one-statement read returns are fixed by
    its text: no ``*`` that can stand for a table's columns (``SELECT *`` and
    ``t.*`` gain one when ``ALTER TABLE`` adds it; ``count(*)`` cannot).
    Conservative: any other ``*`` (a product, a comment) counts as one that can."""
    return "*" not in sql or "*" not in sql.replace("(*)", "")


class ReaderPool:
    """``"inline"`` mode: up to ``size`` readers shared by every thread.

    Each thread that reads keeps a reader of its own while it lives (no
    hand-over per read, a connection whose caches are its own): the pool
    lends readers only to threads beyond ``size``. An owned reader goes back
    to the pool when its thread ends, when another thread waits for a reader
    at the end of the owner's read, or when a newcomer finds every reader
    owned and the owner is not reading (it is taken from the idle owner, who
    gets another one at its next read). So owning costs nobody a wait.

    Fair within a bound: when every reader is in use, threads wait in line.
    A reader given back goes to the free stack and wakes the first in line,
    and a thread that asks meanwhile may take it first (no hand-over between
    threads per read: that cost a quarter of the throughput with twice as
    many threads as readers). Once the first in line has waited ``_PATIENCE``,
    readers given back go straight to it, still in use, and newcomers join
    the end of the line: nobody waits past the patience plus its turn.

    Thread-safe. A reader is in use exactly while its ``lock`` is held (taken
    without blocking: whoever fails to take it looks elsewhere); ``_lock``
    guards opening readers, taking them from idle owners, the line of
    waiting threads, closing.
    """

    def __init__(self, path: str, size: int, busy_timeout: float,
                 vfs: str | None = None, hang_timeout: float | None = None,
                 setup: Setup | None = None) -> None:
        self._path = path
        self._size = size
        self._setup = setup
        self._hang_timeout = hang_timeout
        self._busy_timeout = busy_timeout
        self._vfs = vfs
        self._known: TextMemo[bool] = TextMemo()
        # Texts known to be one read-only statement whose column names are
        # fixed by the text (see _names_fixed_by_text), with those names: the
        # lean read of :meth:`fast_read`.
        self._column_memo: TextMemo[tuple[str, ...]] = TextMemo()
        self._columns = self._column_memo.map
        self._free: list[Reader] = []  # owned by no thread; the most recently used on top
        self._all: list[Reader] = []
        self._local = threading.local()  # .owner: this thread's _Owner
        self._lock = threading.Lock()
        self._given_back = threading.Condition(self._lock)  # a reader closed (close() waits)
        # Threads waiting for a reader, longest first. Changed under _lock; read
        # without it (truthiness: "is anyone in line?") on the hot paths.
        self._waiters: deque[_Waiter] = deque()
        self._patience = _PATIENCE
        self._shared = False  # set once a reader was taken from an idle owner
        self._closed = False

    def start(self) -> None:
        """Open the first reader now, so a failing ``connection_setup`` is known at start.

        Raises:
            what opening it raised (the gateway's start() then fails).
        """
        reader = Reader(self._path, self._busy_timeout, self._vfs, self._known, self._setup)
        with self._lock:
            self._all.append(reader)
            self._free.append(reader)

    @property
    def reads(self) -> int:
        return sum(reader.served for reader in list(self._all))

    @property
    def to_writer(self) -> int:
        return sum(reader.passed for reader in list(self._all))

    def fast_read(self, sql: str, params: tuple[Any, ...],
                  timeout: float | None) -> Result | None:
        """The lean read: a text known to be one read-only statement, on the
        calling thread's own reader; None when this path does not apply (no
        owned reader, a text not yet known, the reader taken, the pool
        closed): then :meth:`read` does. Raises as :meth:`Reader.read`.

        Why (cProfile and perf_counter loops of ``SELECT views FROM pages
        WHERE name = ?`` on one thread, load 6-8): the general path spent
        2.4 us over a plain apsw ``execute().fetchall()`` (4.5 us): 1.5 us
        in run_read (the shape memo, a fetchone, the description turned into
        names), 0.4 us in Reader.read, 0.2 us in the pool, 0.7 us in
        Gateway.execute's checks and routing. Here the names come from a
        memo and the rows from one fetchall.
        """
        owner = getattr(self._local, "owner", None)
        columns = self._columns.get(sql)
        if columns is None:
            return None
        if owner is None:
            return self._shared_read(sql, params, columns, timeout) if self._shared else None
        reader = owner.reader
        lock = reader.lock
        if not lock.acquire(False):
            return None
        if self._closed:
            self._release(reader)  # (closes it: close() may have passed it by)
            return None
        if reader.owner is not owner.token:  # taken by another thread while this one idled
            self._not_mine(reader)
            return None
        now = _monotonic()
        hang = self._hang_timeout
        deadline = None if timeout is None else now + timeout
        reader.deadline = deadline if hang is None or (
            deadline is not None and deadline <= now + hang) else now + hang
        # From here on Reader.known_read, inlined (a call costs 0.1 us per read).
        reader.running = True
        try:
            rows = reader.cursor.execute(sql, params).fetchall()
        except BaseException as exc:
            reader.renew_cursor()
            if isinstance(exc, apsw.ReadOnlyError):  # judged read-only, yet it writes
                self.forget_read(sql)
                return None  # (nothing was written: the connection is read-only)
            raise reader.translate(exc, deadline, timeout, None, params) from None
        finally:
            reader.running = False
            reader.deadline = None
            if self._waiters or self._closed:
                self._release(reader)
            else:
                lock.release()
                if self._waiters:  # (see _kept)
                    self._kept()
        reader.served += 1
        result: Result = _new(_ReadResult)  # make_result(), inlined: this runs per read
        _set_rows(result, tuple(rows))
        _set_columns(result, columns)
        return result

    def _shared_read(self, sql: str, params: tuple[Any, ...], columns: tuple[str, ...],
                     timeout: float | None) -> Result | None:
        """The lean read once readers are shared (more threads read than there
        are readers): a free reader for this one read, if one is free and
        nobody in line has waited past the patience; else None (then
        :meth:`read` takes one, or waits in line). Raises as :meth:`Reader.read`."""
        if not self._may_take():
            return None
        reader = self._pop_free()
        if reader is None:
            return None
        try:
            if self._closed:
                return None  # (_release closes it; read() then raises GatewayClosed)
            now = _monotonic()
            hang = self._hang_timeout
            result = reader.known_read(sql, params, columns,
                                       None if timeout is None else now + timeout, timeout,
                                       None if hang is None else now + hang)
        finally:
            self._release(reader)
        if result is None:  # judged read-only, yet it writes: the writer's from now on
            self.forget_read(sql)
        return result

    def read(self, sql: str, params: Any, timeout: float | None,
             cancel: threading.Event | None = None) -> Result | None:
        """Run a read in the calling thread; None when it must go to the writer.

        Waits for a reader when all ``size`` are in use (within ``timeout``).
        ``cancel``, once set, stops the running statement (see :meth:`Reader.read`).
        """
        now = _monotonic()
        deadline = None if timeout is None else now + timeout
        hang = self._hang_timeout
        reader = self.acquire(deadline, timeout)
        try:
            if self._closed:
                raise GatewayClosed("gateway is closed")
            result = reader.read(sql, params, deadline, timeout,
                                 None if hang is None else now + hang, cancel)
        finally:
            self._release(reader)
        self._learn_columns(sql, params, result)
        return result

    def read_on(self, reader: Reader, sql: str, params: Any, deadline: float | None,
                timeout: float | None, hang_limit: float | None) -> Result | None:
        """:meth:`Reader.read` on ``reader``, which the calling thread holds (a
        snapshot's), learning the text's columns as :meth:`read` does."""
        result = reader.read(sql, params, deadline, timeout, hang_limit)
        self._learn_columns(sql, params, result)
        return result

    def forget_read(self, sql: str) -> None:
        """``sql`` was judged read-only, yet it wrote (refused on a reader): no
        longer a known read (the writer runs it from now on)."""
        self._column_memo.forget(sql)
        self._known.forget(sql)

    def _learn_columns(self, sql: str, params: Any, result: Result | None) -> None:
        """Remember the columns of a text known to be one read-only statement,
        if they are fixed by its text (the lean read then serves it)."""
        if (result is not None and result.columns and type(params) is tuple
                and self._known.map.get(sql) and _names_fixed_by_text(sql)):
            self._column_memo.remember(sql, result.columns)

    def acquire(self, deadline: float | None, timeout: float | None) -> Reader:
        """A reader for the calling thread, in use (its lock held) until
        :meth:`_release`: its own, a free one, a new one, one taken from an
        idle owner, or one got in line (waiting until ``deadline``).

        Raises:
            GatewayClosed: the pool is closed.
            RequestTimeout: none came before ``deadline`` (``started=False``).
        """
        owner: _Owner | None = getattr(self._local, "owner", None)
        if owner is not None:
            reader = owner.reader
            if reader.owner is owner.token and reader.lock.acquire(False):
                if reader.owner is owner.token:
                    return reader
                self._not_mine(reader)
            self._local.owner = None  # it was taken while this thread was idle
        if self._may_take():
            free = self._pop_free()
            if free is not None:
                return free
        with self._lock:
            if self._closed:
                raise GatewayClosed("gateway is closed")
            if self._may_take():
                free = self._pop_free()
                if free is not None:
                    return free
                if len(self._all) < self._size:
                    reader = Reader(self._path, self._busy_timeout, self._vfs, self._known,
                                    self._setup)
                    reader.lock.acquire()
                    self._all.append(reader)
                    return reader
                idle = self._take_idle()
                if idle is not None:
                    return idle
            waiter = _Waiter(_monotonic())
            self._waiters.append(waiter)
            # In line first, then a look at the free stack: a reader given back
            # without the lock before this thread was in line is found here
            # (its giver appends it, then looks for a line: see _give_back).
            self._hand_over()
        return self._wait(waiter, deadline, timeout)

    def _may_take(self) -> bool:
        """True unless the first thread in line has waited past the patience
        (then free readers are its, and a newcomer gets in line)."""
        try:
            first = self._waiters[0]
        except IndexError:
            return True
        return _monotonic() - first.since < self._patience

    def _wait(self, waiter: _Waiter, deadline: float | None, timeout: float | None) -> Reader:
        """Block in line until ``waiter`` has a reader, the pool closes or ``deadline``."""
        while True:  # bounded: each turn ends with a reader, an error, or a wake-up to try again
            try:
                if deadline is None:
                    got = waiter.ready.acquire()
                else:
                    got = waiter.ready.acquire(
                        True, min(max(0.0, deadline - _monotonic()), threading.TIMEOUT_MAX))
            except BaseException:  # Ctrl-C in the main thread: out of line, nothing kept
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                        waiter.reader = None
                if waiter.reader is not None:
                    self._give_back(waiter.reader)
                raise
            with self._lock:
                waiter.woken = False  # (ready is held again: the next wake releases it)
                reader = waiter.reader  # handed over: out of line already
                if reader is None and not self._closed:
                    # Woken to try (a newcomer may have been first), or at the
                    # deadline, maybe woken as it passed: what is free is taken.
                    reader = self._pop_free() or self._take_idle()
                    if reader is not None:
                        self._waiters.remove(waiter)
                if reader is not None:
                    return reader
                if self._closed:  # (close() emptied the line)
                    raise GatewayClosed("gateway is closed")
                if not got:
                    self._waiters.remove(waiter)
                    raise RequestTimeout(timeout or 0.0, started=False)

    @staticmethod
    def _wake(waiter: _Waiter) -> None:
        """Release ``waiter``'s ``ready`` unless it was and has not woken yet (``_lock`` held)."""
        if not waiter.woken:
            waiter.woken = True
            waiter.ready.release()

    def _pop_free(self) -> Reader | None:
        """A reader from the free stack, now in use (its lock held), or None."""
        try:
            reader = self._free.pop()
        except IndexError:  # (emptied by another thread since it was looked at)
            return None
        if reader.lock.acquire(False):
            return reader
        # Its lock is held for a moment by its former owner's look (see
        # _not_mine): it is still free, and must not drop out of the stack.
        self._free.append(reader)
        return None

    def _take_idle(self) -> Reader | None:
        """An owned reader whose owner is not reading now, taken from it (in use,
        owned by no thread; the owner gets another at its next read), or None
        (``_lock`` held)."""
        for reader in self._all:  # bounded: the readers
            if reader.owner is not None and reader.lock.acquire(False):
                reader.owner = None
                self._shared = True  # more threads read than there are readers
                return reader
        return None

    def _not_mine(self, reader: Reader) -> None:
        """Undo a look at a reader this thread owned once (its lock taken, its
        owner another): it is free, and may have been passed by a hand-over."""
        reader.lock.release()
        if self._waiters:
            with self._lock:
                self._hand_over()

    def _hand_over(self) -> None:
        """Hand free readers, then idle owners' readers, to the threads in line,
        first come first (``_lock`` held): nobody waits while a reader idles."""
        while self._waiters:  # bounded: each turn hands one over, or stops
            reader = self._pop_free() or self._take_idle()
            if reader is None:
                return
            waiter = self._waiters.popleft()
            waiter.reader = reader
            self._wake(waiter)

    def _release(self, reader: Reader) -> None:
        """End a use of ``reader`` (its lock held): keep it as this thread's own
        when nobody waits, the thread owns none and no reader was ever taken
        from an idle owner; else give it back. Once one was, more threads read
        than there are readers: ownership would only move readers from idle
        owners to newcomers one scan at a time, so from then on they are
        shared from the free stack (no lock: ``list.pop``/``append`` are atomic)."""
        if self._closed:
            with self._lock:
                reader.owner = None
                reader.close()  # its lock stays held: nobody uses it again
                self._given_back.notify_all()
            return
        local = self._local
        if not self._waiters:
            owner = getattr(local, "owner", None)
            if owner is not None and owner.reader is reader:  # this thread's own
                reader.lock.release()
                self._kept()
                return
            if owner is None and not self._shared:
                owner = _Owner(reader, self)
                reader.owner = owner.token
                local.owner = owner
                reader.lock.release()
                self._kept()
                return
        if reader.owner is not None:
            reader.owner = None
            local.owner = None
        self._give_back(reader)

    def _kept(self) -> None:
        """After a thread kept its reader (idle now: its lock given back): a
        thread that got in line while this one looked for a line, and could not
        take the reader then (still in use), takes it now."""
        if self._waiters:
            with self._lock:
                self._hand_over()

    def _give_back(self, reader: Reader) -> None:
        """``reader`` (in use, owned by no thread) goes to the first in line if
        it has waited past the patience (still in use: no newcomer can take it
        first); else to the free stack, waking the first in line not yet woken."""
        if self._waiters:
            with self._lock:
                if self._closed:
                    reader.close()
                    self._given_back.notify_all()
                    return
                if not self._may_take():
                    waiter = self._waiters.popleft()
                    waiter.reader = reader
                    self._wake(waiter)
                    return
        reader.lock.release()
        self._free.append(reader)
        if self._waiters:  # someone in line: it tries for it (or got in line meanwhile)
            with self._lock:
                for waiter in self._waiters:  # bounded: the line
                    if not waiter.woken:
                        self._wake(waiter)
                        break

    def _orphaned(self, owner: _Owner) -> None:
        """The thread that owned ``owner.reader`` ended: the reader goes back."""
        reader = owner.reader
        if reader.owner is not owner.token or not reader.lock.acquire(False):
            return  # taken by another thread already
        try:
            if reader.owner is not owner.token:
                reader.lock.release()
                return
            reader.owner = None
        except BaseException:
            reader.lock.release()
            raise
        if self._closed:
            reader.close()
            return
        self._give_back(reader)

    def close(self) -> None:
        """Stop reads in progress and close every connection not in use now;
        bounded. A reader held by a snapshot between two statements is closed
        when the snapshot gives it back (its next statement raises GatewayClosed)."""
        with self._lock:
            self._closed = True
            for reader in self._all:
                reader.stop = True  # the progress handler stops a running statement
            self._free = []
            while self._waiters:  # their reader stays None: GatewayClosed
                self._wake(self._waiters.popleft())
            for reader in self._all:
                if reader.lock.acquire(False):  # idle (free, or owned by an idle thread)
                    reader.owner = None
                    reader.close()  # its lock stays held: nobody uses it again
            deadline = _monotonic() + _CLOSE_WAIT
            while _monotonic() < deadline and any(r.running for r in self._all):
                self._given_back.wait(0.05)
            self._given_back.notify_all()


class ReaderLanes:
    """``"threads"`` mode: reader threads, each owning one connection, fed by a queue."""

    def __init__(self, path: str, size: int, busy_timeout: float, queue_size: int,
                 vfs: str | None = None, hang_timeout: float | None = None,
                 setup: Setup | None = None) -> None:
        self._path = path
        self._setup = setup
        self._opened = 0  # reader threads done opening (or failing to)
        self._open_error: BaseException | None = None
        self._hang_timeout = hang_timeout
        self._busy_timeout = busy_timeout
        self._vfs = vfs
        self._known: TextMemo[bool] = TextMemo()
        self._queue = RequestQueue(queue_size)
        self._readers: list[Reader] = []
        self._threads = [threading.Thread(target=self._run, daemon=True,
                                          name=f"sqlite-gateway-reader-{i}")
                         for i in range(size)]
        self._lock = threading.Lock()  # guards the counters
        self._ready = threading.Condition(self._lock)  # a thread opened (or failed to)
        self.reads = 0
        self.to_writer = 0

    def start(self) -> None:
        """Start the reader threads; return once each has opened its connection.

        Raises:
            the first error a thread met opening its reader (a failing
            ``connection_setup``, say); the caller then closes the lanes.
        """
        for thread in self._threads:
            thread.start()
        with self._lock:
            while self._opened < len(self._threads):
                self._ready.wait()
            error = self._open_error
        if error is not None:
            raise error

    def read(self, sql: str, params: Any, timeout: float | None,
             cancel: threading.Event | None = None) -> Result | None:
        request = Request(Kind.EXECUTE, sql, params, answer=FUTURE)
        # The reader stops the statement itself at the caller's deadline.
        now, hang = time.monotonic(), self._hang_timeout
        request.args = (None if timeout is None else now + timeout, timeout,
                        None if hang is None else now + hang, cancel)
        self._queue.put(request)
        return wait_for(request, timeout)  # type: ignore[no-any-return]

    def _run(self) -> None:
        try:
            reader = Reader(self._path, self._busy_timeout, self._vfs, self._known,
                            self._setup)
        except BaseException as exc:
            logger.critical("reader could not open %s", self._path, exc_info=True)
            self._queue.close(f"gateway is broken: a reader could not open: {exc}")
            fail_pending(self._queue.drain(), lambda: GatewayClosed("reader failed to open"))
            with self._lock:
                self._opened += 1
                self._open_error = self._open_error or exc
                self._ready.notify_all()
            return
        with self._lock:
            self._readers.append(reader)
            self._opened += 1
            self._ready.notify_all()
        try:
            while True:
                batch = self._queue.get_batch(1)
                if batch is STOP:
                    return
                assert isinstance(batch, list)
                for request in batch:
                    if not request.claim():
                        continue
                    deadline, timeout, hang_limit, cancel = request.args
                    try:
                        result = reader.read(request.sql or "", request.params, deadline,
                                             timeout, hang_limit, cancel)
                    except BaseException as exc:  # goes back to its own caller
                        request.set_exception(exc)
                        del exc  # break the frame <-> exception cycle
                        continue
                    with self._lock:
                        self.reads += result is not None
                        self.to_writer += result is None
                    request.set_result(result)
        finally:
            reader.close()

    def close(self) -> None:
        """Stop reads in progress, answer what is queued, stop the threads; bounded."""
        self._queue.close("gateway is closed")
        fail_pending(self._queue.drain(), lambda: GatewayClosed("gateway is closed"))
        with self._lock:
            for reader in self._readers:
                reader.stop = True
        deadline = time.monotonic() + _CLOSE_WAIT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
