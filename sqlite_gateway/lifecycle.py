"""A gateway's lifecycle: its states, start, close, fork and interpreter exit.

States (:class:`State`)::

    NEW --start()--> RUNNING --close()--> CLOSING --worker drained--> CLOSED
                        |                    |
                        +--worker died, or---+------------------> BROKEN
                           the watchdog gave it up (hang_timeout)

Where each fact lives, and why it stays there. Four objects hold a piece of
the lifecycle, each under the lock of the thing it must be atomic with:

- ``Lifecycle._state`` (``_state_lock``): NEW, RUNNING, CLOSING, CLOSED, as
  start() and close() move them. Only these two calls change it, rarely.
- the queue's closed reason (``RequestQueue``'s mutex): whether a request is
  *accepted*. It must be decided under the same mutex as the put itself, or
  a request could slip in behind the stop and never be answered.
- the turn's ``death`` (``Turn``'s lock): the worker died or was given up. It
  must be set under the same lock as the worker begins each step, so that a
  give-up can never race the start of a COMMIT.
- the worker's ``stopped`` event: close() waits on it; an Event is what a
  thread waits on.

One lifecycle object with one lock over all four was considered and dropped:
that lock would be taken on every put and on every step of the worker (the
hot path), and the two atomicity rules above would then hang on one lock
shared with start/close, which is harder to reason about, not easier. What
this module gives instead is one place that *reads* them: :attr:`Lifecycle.state`
is the whole state machine as callers see it (BROKEN comes from the turn's
death), and start/close/fork/exit are here, beside the diagram. The
:class:`~sqlite_gateway.Gateway` owns one :class:`Lifecycle` and hands its
``start``, ``close`` and ``state`` to it.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import threading
import weakref

from .core import Core
from .errors import GatewayClosed, GatewayError
from .requestqueue import RequestQueue, fail_pending
from .samefile import warn_if_shared
from .watchdog import Watchdog

logger = logging.getLogger(__name__)

_EXIT_CLOSE_TIMEOUT = 30.0  # how long the exit hook waits for one gateway to drain
_open_gateways: weakref.WeakSet[Lifecycle] = weakref.WeakSet()
# Gateways closed while their worker thread was stuck (given up): the thread keeps
# its connection, so the file stays open in this process until it exits. Kept
# (strongly: the thread outlives the gateway object) so that the same-file check
# of a later gateway knows whose descriptors those are.
_stuck_gateways: set[Lifecycle] = set()
# In a forked child, the parent's gateways: their descriptors came along in the fork and
# stay open here (the parent still uses them), so the same check must know them too.
_inherited_gateways: set[Lifecycle] = set()


class State(enum.Enum):
    """A gateway's lifecycle state (``Gateway.state``, ``stats()["state"]``)."""

    NEW = "new"  # constructed: no thread, no connection yet
    RUNNING = "running"  # the worker accepts and runs requests
    CLOSING = "closing"  # close() called: nothing new accepted, the worker drains
    CLOSED = "closed"  # the worker has stopped and closed its connection; final
    BROKEN = "broken"  # the worker died or hung; every call fails with its reason; final


class Lifecycle:
    """One gateway's state machine, and the parts it starts and stops.

    Owned by a :class:`~sqlite_gateway.Gateway` (one each): it starts and
    stops the worker and its thread, the readers and the watchdog (the
    first three through the gateway's :class:`~sqlite_gateway.core.Core`,
    shared with every door). It holds no reference to the gateway, so an
    abandoned gateway is still collected. Thread-safe: ``_state_lock`` is
    held while reading-then-changing ``_state`` and ``thread`` (start and
    close); request acceptance is the queue's own mutex.
    """

    def __init__(self, path: str, core: Core, watchdog: Watchdog | None) -> None:
        self.path = path
        self.core = core
        self._queue = core.queue
        self._worker = core.worker
        self._readers = core.readers
        self.watchdog = watchdog
        self._state_lock = threading.Lock()
        self._state = State.NEW
        self.thread: threading.Thread | None = None

    @property
    def state(self) -> State:
        """The lifecycle state (a snapshot)."""
        if self._worker.death is not None:
            return State.BROKEN
        return self._state

    def start(self) -> None:
        """NEW -> RUNNING; the contract is :meth:`Gateway.start`'s."""
        with self._state_lock:
            if self._state is not State.NEW:
                raise GatewayError(f"gateway is {self.state.value}; it can be started once "
                                   "(to restart, make a new Gateway on the same file)")
            # before we open it ourselves
            warn_if_shared(self.path, self,
                           [*_open_gateways, *_stuck_gateways, *_inherited_gateways])
            thread = threading.Thread(target=self._worker.run, daemon=True,
                                      name=f"sqlite-gateway-writer:{os.path.basename(self.path)}")
            # Daemon, so the interpreter reaches atexit, where _close_at_exit
            # drains it; an explicit close() is still the proper way.
            self.thread = thread
            try:
                # (Inside the try: Ctrl-C can land while start() waits for the
                # new thread to run, and must leave the gateway closed too.)
                thread.start()
                self._worker.ready.result()  # bounded by the busy timeout
            except BaseException:
                self._state = State.CLOSED
                # If the worker opens after all, the closed queue makes it close
                # its connection and end.
                self._queue.close("gateway is closed: start() did not complete")
                if self._worker.ready.done():
                    thread.join()  # it is ending (it failed to open, or will stop now)
                # Otherwise this is Ctrl-C (or another signal's exception) while the
                # worker waits for a lock another process holds: return at once and
                # leave the daemon thread to the busy timeout, not the caller.
                raise
            if self._readers is not None:
                # After the writer has put the file in WAL mode. A reader that
                # cannot open (the connection_setup option raising, say) fails start():
                # nothing stays open.
                try:
                    self._readers.start()
                except BaseException:
                    self._state = State.CLOSED
                    self._queue.close("gateway is closed: start() did not complete")
                    self._readers.close()
                    thread.join()  # the worker drains nothing and closes the writer
                    raise
            if self.watchdog is not None:
                self.watchdog.start()
            self._state = State.RUNNING
            self.core.started = True
            _open_gateways.add(self)
            # If the gateway is dropped without close(), let the worker finish and exit.
            self._finalizer = weakref.finalize(self, self._queue.close, "gateway was collected")
            self._finalizer.atexit = False
        logger.info("gateway started on %s", self.path)

    def close(self, timeout: float | None = None) -> None:
        """RUNNING -> CLOSING -> CLOSED; the contract is :meth:`Gateway.close`'s."""
        self.core.check_caller("close")
        with self._state_lock:
            if self._state is State.CLOSED:
                # Closed already, or start() failed or was interrupted, or this is
                # a forked child's copy: nothing of ours to drain or wait for.
                return
            if self._state is State.NEW:
                self._state = State.CLOSED
                self._queue.close("gateway is closed")
                return
            if self._state is State.RUNNING:
                self._state = State.CLOSING
                self._queue.close("gateway is closed")
            thread = self.thread
        assert thread is not None
        if self._readers is not None:
            self._readers.close()
        # "stopped" is also set when the worker is given up: a stuck thread
        # is never waited for.
        if self._worker.stopped.wait(timeout) and self._worker.death is None:
            thread.join()  # it has closed its connection and is about to exit
        if self.watchdog is not None:
            self.watchdog.stop()
        if not self._worker.stopped.is_set():
            logger.warning("gateway on %s: worker still busy after %s s; failing queued requests",
                           self.path, timeout)
            fail_pending(self._queue.drain(),
                         lambda: GatewayClosed("gateway closed before this request ran"))
        with self._state_lock:
            if self._state is State.CLOSING:
                self._state = State.CLOSED
                _open_gateways.discard(self)
                if thread.is_alive() and self._worker.death is not None:
                    _stuck_gateways.add(self)
                logger.info("gateway closed on %s", self.path)

    def is_new(self) -> bool:
        """True until ``start()`` or ``close()`` is first called."""
        return self._state is State.NEW

    def __repr__(self) -> str:
        return f"<Gateway {self.path!r} {self.state.value}>"

    def disown(self, reason: str) -> None:
        """In a forked child (one thread, at the fork): refuse every call at once.

        The parent's worker, watchdog and reader threads did not come along,
        and its SQLite connections must not be used here. A lock that one of
        the parent's threads held at the fork stays locked here, so this
        takes none: it swaps in a fresh state lock and an already closed queue.
        """
        self._state_lock = threading.Lock()
        self._state = State.CLOSED
        queue = RequestQueue(1)
        queue.close(reason)
        self._queue = queue
        self._readers = None
        self.core.disown(queue)
        self._finalizer.detach()


def _after_fork_in_child() -> None:
    """A forked child cannot use its parent's gateways: refuse their calls at once."""
    parent, child = os.getppid(), os.getpid()
    for gateway in list(_open_gateways):
        gateway.disown(f"this gateway was started in process {parent}; a forked child "
                        f"(process {child}) must make its own Gateway after the fork")
        _inherited_gateways.add(gateway)
    _open_gateways.clear()  # and the child's exit does not wait for the parent's workers


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_at_exit() -> None:
    """Drain gateways the program forgot to close (the worker is a daemon thread).

    Registered with atexit on import; also called by code that must drain
    them earlier (the replication supervisor stops litestream after this).
    """
    for gateway in list(_open_gateways):
        if gateway.state in (State.RUNNING, State.CLOSING):
            logger.warning("%r was not closed; closing it at interpreter exit", gateway)
            gateway.close(timeout=_EXIT_CLOSE_TIMEOUT)
