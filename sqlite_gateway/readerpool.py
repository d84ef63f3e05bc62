"""The ``"inline"`` read mode: up to ``readers`` read-only connections
shared by every calling thread (:class:`ReaderPool`).

A thread keeps one while it lives, or (past ``readers`` threads) takes a
free one for one read; it runs the read in place (no hand-off); when all are
busy it waits in line. Any number of threads can read: a web app need not
tell the gateway its thread count. One connection and its read:
``sqlite_gateway/reader.py``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

import apsw

from .errors import GatewayClosed, RequestTimeout
from .memo import TextMemo
from .reader import _CLOSE_WAIT, Reader, Setup
from .result import Result

logger = logging.getLogger(__name__)

_PATIENCE = 0.02  # seconds first in line before readers are handed to it, no newcomer first
_monotonic = time.monotonic


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
        return Result(tuple(rows), 0, 0, columns)

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
