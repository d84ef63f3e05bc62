"""The writers of one file, in several processes, queue on a kernel lock.

Each process of a pre-forking server (gunicorn, uWSGI) has its own gateway,
and so its own writer. Without this, the writers take turns on SQLite's own
write lock, and a writer that finds it held sleeps in the busy handler (1 to
100 ms at a time, not woken when the lock comes free): with 4 processes the
file reached 0.49x of one process's commits per second, with p99 264 ms.

Here the writer of each process holds an exclusive ``flock`` on a side file,
``<database>-gateway.lock``, from before BEGIN until its COMMIT has returned
(not while it answers: waking the batch's callers is no reason to keep the
other processes waiting). A writer that finds it held blocks in the kernel,
which wakes it as soon as the holder lets go; meanwhile its callers keep
queueing, so its next batch is bigger (each process keeps its own group
commit). SQLite's lock still guards the data: this lock only orders the
writers, so SQLite's busy handler is not reached while another gateway's
batch runs.

Turns. The kernel wakes a waiter when the lock comes free, but the writer
that has just let go is running and would take it again first (with 4
processes, 1 hold in 10 went twice in a row to one process while another
waited, whose batch then waited a whole extra turn). So a waiting helper
marks itself with a POSIX read lock on byte 0 of the lock file, and a writer
that sees another process's mark (``F_GETLK``) queues in the kernel behind
it instead of trying. A mark is only a hint: the kernel drops it with its
process, and a wrong one costs a turn, never a lock. On 64-bit Linux only,
where ``struct flock`` is known and POSIX and ``flock`` locks never meet
(elsewhere the writers take turns as the kernel wakes them).

Guarantees:

- a process that dies holding the lock never leaves the others waiting: the
  kernel drops a ``flock`` when its last descriptor closes (process exit, a
  kill -9 included);
- a blocking ``flock`` cannot be interrupted, so it runs on a helper thread and
  the writer waits for it at most ``busy_timeout`` (then it goes on without
  the lock: SQLite's busy handler and ``busy_timeout`` apply as before, and a
  lock that is never freed costs each batch one ``busy_timeout``, not a hang);
- ``flock`` locks belong to the open file description, so two gateways of
  one process on one file exclude each other too, and closing one never
  drops the other's lock (``fcntl`` locks would do both);
- a forked child closes its inherited descriptor (:meth:`ProcessLock.forget`):
  it must never keep its parent's lock alive.

Not on Windows (no ``fcntl``): :func:`available` is False there.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


def _gil_keeping_flock() -> Callable[[int, int], int] | None:
    """libc's flock() called without releasing the GIL (ctypes.PyDLL), for the
    calls that never block: the attempt and the unlock.

    Why: fcntl.flock releases the GIL around the system call, and a writer
    that lets go of the GIL twice per batch waits up to a switch interval
    (5 ms) to get it back from busy caller threads. With fcntl.flock, 4
    producer threads filled a 50-request queue that they never fill without
    the lock (a web call then got Overloaded in 2 of 3 runs); these calls
    take about a microsecond with the GIL held.
    """
    try:
        flock = ctypes.PyDLL(None).flock
    except (OSError, AttributeError):  # pragma: no cover - no libc flock
        return None
    flock.argtypes = (ctypes.c_int, ctypes.c_int)
    flock.restype = ctypes.c_int
    return flock


_flock = _gil_keeping_flock() if fcntl is not None else None


class _FlockStruct(ctypes.Structure):
    """``struct flock`` of 64-bit Linux (x86-64 and arm64 lay it out alike)."""

    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
                ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64),
                ("l_pid", ctypes.c_int)]


def _gil_keeping_marks() -> tuple[Callable[[int], bool], Callable[[int, bool], None]] | None:
    """The waiter marks: a POSIX read lock on byte 0 of the lock file says "a
    writer of this process waits". Returns (probe, mark): ``probe(fd)`` is
    True when another process has its mark set (``F_GETLK`` reports only
    other processes' locks); ``mark(fd, waiting)`` sets or clears this
    process's (``F_SETLK``, never blocks).

    Through ``ctypes.PyDLL`` (the GIL kept, as for the attempt: a thread that
    let go of it here would wait for busy callers to hand it back); only on
    64-bit Linux, where the layout of ``struct flock`` is known and POSIX and
    ``flock`` locks never meet (elsewhere: None, and no marks).
    """
    if fcntl is None or not sys.platform.startswith("linux") or ctypes.sizeof(
            ctypes.c_void_p) != 8:
        return None
    try:
        libc_fcntl = ctypes.PyDLL(None, use_errno=True).fcntl
    except (OSError, AttributeError):  # pragma: no cover - no libc fcntl
        return None
    libc_fcntl.restype = ctypes.c_int
    getlk, setlk = fcntl.F_GETLK, fcntl.F_SETLK
    rdlck, wrlck, unlck = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK

    def others_wait(fd: int) -> bool:
        probe = _FlockStruct(wrlck, os.SEEK_SET, 0, 1, 0)
        if libc_fcntl(fd, getlk, ctypes.byref(probe)) != 0:
            return False
        return bool(probe.l_type != unlck)

    def mark(fd: int, waiting: bool) -> None:
        lock = _FlockStruct(rdlck if waiting else unlck, os.SEEK_SET, 0, 1, 0)
        if libc_fcntl(fd, setlk, ctypes.byref(lock)) != 0:  # only a hint for the others:
            logger.debug("process lock wait mark: errno %d", ctypes.get_errno())  # less fair

    return others_wait, mark


_marks = _gil_keeping_marks()
_others_wait = _marks[0] if _marks is not None else None

SUFFIX = "-gateway.lock"


def available() -> bool:
    """True where ``flock`` exists (every POSIX system)."""
    return fcntl is not None


class ProcessLock:
    """An exclusive ``flock`` on ``<path>-gateway.lock``, waited for with a bound.

    Used by one thread at a time (whichever holds the gateway's writer lock):
    :meth:`acquire`, then :meth:`release` (which may be called again: the
    writer lets go right after COMMIT, and once more, harmlessly, when its
    turn ends).

    A contended wait blocks in the kernel on a helper thread; the helper hands
    the lock over through a plain ``threading.Lock`` (one wake-up, no
    condition variable whose mutex the woken writer would have to win back).
    """

    def __init__(self, path: str) -> None:
        self.path = path + SUFFIX
        self._fd = -1
        self.held = False  # this gateway holds the kernel lock (set by its holder thread)
        # _mutex guards _wanted, _pending and _closed: whether the helper's
        # lock, when it gets it, goes to a writer or back to the kernel.
        self._mutex = threading.Lock()
        self._wanted = False  # a writer waits on _given
        self._pending = False  # the helper is asked to wait, or is waiting, in flock()
        self._closed = False
        # Two one-shot signals (Locks created taken): _ask starts the helper's
        # flock(); _given, released by the helper, tells the writer it holds it.
        self._ask = threading.Lock()
        self._ask.acquire()
        self._given = threading.Lock()
        self._given.acquire()
        self._helper: threading.Thread | None = None
        self.waits = 0  # acquires that found the lock held, or let another go first (stats)
        self.yields = 0  # acquires that let a waiting process go first (stats)

    def open(self) -> None:
        """Open (create) the lock file. Raises OSError."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                           0o644)

    def acquire(self, timeout: float) -> bool:
        """Take the lock; False if it was not free within ``timeout`` seconds.

        When another process's writer is marked as waiting for it, this one
        queues behind it even if the lock is free this instant (its holder
        has just let go, and the kernel has not yet run the waiter): a
        process seldom takes it twice in a row while another waits, and each
        waiter's batch grows meanwhile. A writer that times out stays marked
        until its helper gets the lock and lets it go (a turn for nothing).
        """
        if _others_wait is not None and _others_wait(self._fd):
            self.yields += 1
        else:
            if _flock is not None and _flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB) == 0:
                self.held = True
                return True
            try:  # held (or an error: fcntl's call says which)
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                return True
            except BlockingIOError:
                pass
            except OSError as exc:  # the lock file is unusable: SQLite's locking still applies
                logger.warning("process lock %s: %s", self.path, exc)
                return False
        self.waits += 1
        with self._mutex:
            # "A writer waits", seen by the others at once (marked here, not on the
            # helper thread, which a busy machine may not run for a while).
            self._mark(self._fd, True)
            self._wanted = True
            if not self._pending:
                self._pending = True
                if self._helper is None:
                    self._helper = threading.Thread(target=self._wait_in_kernel, daemon=True,
                                                    name="sqlite-gateway-process-lock")
                    self._helper.start()
                self._ask.release()
        if not self._given.acquire(timeout=min(max(0.0, timeout), threading.TIMEOUT_MAX)):
            with self._mutex:
                if self._wanted:  # still not given: the helper lets it go when it gets it
                    self._wanted = False
                    return False
            self._given.acquire()  # given just as the wait ended: released already
        self.held = True
        return True

    def release(self) -> None:
        """Let the lock go, if held (a second call does nothing)."""
        if not self.held:
            return
        self.held = False
        if _flock is not None:
            _flock(self._fd, fcntl.LOCK_UN)
        else:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _wait_in_kernel(self) -> None:
        """The helper: block in flock() whenever a writer wants the lock, and
        hand it over (or let it go, if the writer stopped waiting)."""
        while True:  # bounded: returns once closed
            self._ask.acquire()
            with self._mutex:
                if self._closed:
                    return
                fd = self._fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel wakes us when it is free
            except OSError:  # closed under us
                with self._mutex:
                    self._pending = False
                return
            with self._mutex:
                self._pending = False
                if self._closed:
                    # close() closed the descriptor while we waited: the lock we got
                    # went with it (and the number may name another file by now).
                    return
                if self._wanted:
                    self._wanted = False
                    self._given.release()
                else:  # the writer gave up waiting meanwhile (under _mutex: fd still ours)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                self._mark(fd, False)  # (after the hand-over: not on its path)

    @staticmethod
    def _mark(fd: int, waiting: bool) -> None:
        """Set or clear this process's "a writer waits" mark (see
        :func:`_gil_keeping_marks`). Called with ``_mutex`` held, so never on a
        descriptor close() has closed. Set as a writer starts to wait;
        cleared once the lock is handed over (or let go)."""
        if _marks is not None:
            _marks[1](fd, waiting)

    def close(self) -> None:
        """Release and close (the helper thread, if idle or blocked, ends with it)."""
        with self._mutex:
            if not self._closed and not self._pending and self._helper is not None:
                self._ask.release()  # wake the idle helper: it sees _closed and ends
            self._closed = True
            fd, self._fd = self._fd, -1
            self.held = False
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as exc:
                logger.debug("closing %s: %s", self.path, exc)

    def forget(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking
        (an unlock here would unlock the parent's lock: one file description)."""
        self._closed = True
        self.held = False
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
