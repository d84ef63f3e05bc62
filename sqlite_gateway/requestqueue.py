"""The bounded FIFO between callers and the worker: the gateway's front door.

One mutex guards everything here; the worker sleeps on one condition of it.
The queue decides acceptance: once ``close()`` has run, ``put()`` refuses with
:class:`GatewayClosed`, so nothing can slip in behind the stop.

Requests are kept in one deque per priority (lane 0, interactive, first;
lane 1, background) and numbered in the order they were accepted; within a
lane they leave in that order (write-behind order is per priority). The bound
covers all lanes together. Two rules keep the lanes honest:

- A FLUSH barrier is answered only after every request accepted before it,
  in any lane: while an older request waits in another lane, that lane is
  served first (up to the barrier's number), whatever its priority.
- Background work is not starved: once its oldest request has waited
  ``starve_after`` seconds, the next batch comes from its lane.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .errors import GatewayClosed, Overloaded
from .request import STOP, Kind, Request, _Marker

LANES = 2  # 0: interactive, 1: background (see arguments.PRIORITIES)
_EXCLUSIVE = Kind.EXCLUSIVE
_FLUSH = Kind.FLUSH
STARVE_AFTER = 1.0  # seconds a background request waits at most behind interactive work


class RequestQueue:
    def __init__(self, maxsize: int, lanes: int = LANES,
                 starve_after: float = STARVE_AFTER) -> None:
        self.maxsize = maxsize
        self.starve_after = starve_after
        # _mutex guards _lanes, _count, _seq and _closed. _not_empty is
        # notified when a request arrives or the queue closes (the worker waits).
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)
        self._lanes: list[deque[Request]] = [deque() for _ in range(lanes)]
        self._count = 0
        self._seq = 0
        self._closed: str | None = None  # the reason, once nothing more is accepted
        # Blocking producers wait on _not_full until the queue is below high_water.
        self.high_water = max(1, maxsize * 9 // 10)
        self._not_full = threading.Condition(self._mutex)
        self._blocked = 0  # producers waiting on _not_full
        self._sleepers = 0  # threads waiting on _not_empty (the worker; reader threads)
        self._exclusive = [0] * lanes  # EXCLUSIVE requests queued, per lane

    def __len__(self) -> int:
        return self._count  # a snapshot: approximate by the time it is read

    @property
    def closed_reason(self) -> str | None:
        return self._closed

    def put(self, request: Request, block: bool = False, timeout: float | None = None) -> None:
        """Accept ``request`` or raise.

        Fail-fast (``block`` False, every web request): refused at once when
        ``maxsize`` requests wait. Blocking (background producers): waits, up
        to ``timeout`` seconds (None: no limit), until fewer than the
        high-water mark (90 % of ``maxsize``) wait; the room above it stays
        for fail-fast callers, so a blocked producer never turns web requests
        into Overloaded.

        A FLUSH barrier is accepted beyond the bound: it carries no data.

        Raises:
            GatewayClosed: ``close()`` has run (the reason says why), also
                while blocked.
            Overloaded: the queue is full (fail-fast), or stayed above the
                high-water mark for ``timeout`` seconds (blocking).
        """
        with self._mutex:
            if self._closed is not None:
                raise GatewayClosed(self._closed)
            if self._count >= (self.high_water if block else self.maxsize) and (
                    request.kind is not _FLUSH):
                # (A barrier carries no data and holds no room: refusing it would
                # refuse flush() exactly under load, when a producer needs it.)
                if not block:
                    raise Overloaded(self.maxsize)
                self._wait_for_room(timeout)
            self._seq += 1
            request.seq = self._seq
            self._lanes[request.priority].append(request)
            self._count += 1
            if request.kind is _EXCLUSIVE:
                self._exclusive[request.priority] += 1
            if self._sleepers:  # Condition.notify() costs ~1 us even with nobody waiting
                self._not_empty.notify()

    def _wait_for_room(self, timeout: float | None) -> None:
        """Block until the queue is below its high-water mark (mutex held)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._blocked += 1
        try:
            while self._count >= self.high_water:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Overloaded(self.maxsize)
                self._not_full.wait(remaining)
                if self._closed is not None:
                    raise GatewayClosed(self._closed)
        finally:
            self._blocked -= 1

    def accept_inline(self, request: Request) -> bool:
        """Number ``request`` for running in its caller's thread, if nothing waits.

        The caller holds the writer lock, so no batch is in flight either:
        accepting it now keeps every ordering the queue promises. False (and
        nothing done) when other requests wait: the caller must enqueue.

        Raises:
            GatewayClosed: ``close()`` has run.
        """
        with self._mutex:
            if self._closed is not None:
                raise GatewayClosed(self._closed)
            if self._count:
                return False
            self._seq += 1
            request.seq = self._seq
            return True

    def close(self, reason: str) -> bool:
        """Refuse new requests from now on; True for the call that closed it.

        Requests already accepted stay queued: the worker runs them, then gets
        STOP. (STOP is not a deque entry but is delivered after the last
        request of every lane, which is what a marker at the tail would mean.)
        """
        with self._mutex:
            if self._closed is not None:
                return False
            self._closed = reason
            self._not_empty.notify_all()
            self._not_full.notify_all()
            return True

    def get_batch(self, batch_max: int, timeout: float | None = None) -> list[Request] | _Marker:
        """Wait for work, then take it: :meth:`wait` followed by :meth:`take`."""
        ready = self.wait(timeout)
        return self.take(batch_max) if ready else []

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a request waits or the queue is closed; False on timeout."""
        with self._not_empty:
            while not self._count:
                if self._closed is not None:
                    return True  # take() then says STOP
                self._sleepers += 1
                try:
                    if not self._not_empty.wait(timeout):
                        return False
                finally:
                    self._sleepers -= 1
            return True

    def take(self, batch_max: int) -> list[Request] | _Marker:
        """Return the next batch, ``[]`` if nothing waits, or STOP once closed and empty.

        A batch is either one EXCLUSIVE request alone, or up to ``batch_max``
        consecutive other requests of one lane: the first non-empty lane,
        unless a barrier or a starving background request says otherwise
        (see the module docstring). It takes what is there now: it never
        waits for a batch to fill.
        """
        with self._mutex:
            if not self._count:
                return STOP if self._closed is not None else []
            waiting = [index for index, lane in enumerate(self._lanes) if lane]
            if len(waiting) == 1 and not self._exclusive[waiting[0]]:
                # One lane, no EXCLUSIVE in it: no rule can cut the batch short,
                # so take it whole (the per-request checks below, under the
                # mutex, held producers up: 12 % of a post's time in a profile).
                lane = self._lanes[waiting[0]]
                if len(lane) <= batch_max:
                    batch = list(lane)
                    lane.clear()
                else:
                    popleft = lane.popleft
                    batch = [popleft() for _ in range(batch_max)]
                self._count -= len(batch)
                if self._blocked:
                    self._not_full.notify_all()
                return batch
            lane, limit = self._pick_lane()
            batch = [lane.popleft()]
            if batch[0].kind is Kind.EXCLUSIVE:
                self._exclusive[batch[0].priority] -= 1
            else:
                while lane and len(batch) < batch_max:
                    head = lane[0]
                    if head.kind is Kind.EXCLUSIVE or head.seq > limit or (
                            head.kind is Kind.FLUSH and self._oldest_elsewhere(lane) < head.seq):
                        break
                    batch.append(lane.popleft())
            self._count -= len(batch)
            if self._blocked:
                self._not_full.notify_all()
            return batch

    def _pick_lane(self) -> tuple[deque[Request], float]:
        """The lane to serve next, and the highest seq it may give (mutex held)."""
        lanes = [lane for lane in self._lanes if lane]
        lane = lanes[0]
        if len(lanes) > 1:
            head = lane[0]
            if head.kind is Kind.FLUSH:
                # The barrier waits for older work elsewhere: serve that first,
                # but only what is older than the barrier.
                oldest = min(lanes, key=lambda other: other[0].seq)
                if oldest is not lane:
                    return oldest, head.seq - 1
            last = lanes[-1]
            if time.monotonic() - last[0].enqueued >= self.starve_after:
                return last, float("inf")
        return lane, float("inf")

    def _oldest_elsewhere(self, lane: deque[Request]) -> float:
        """The lowest seq waiting at the head of any other lane (mutex held)."""
        return min((other[0].seq for other in self._lanes if other and other is not lane),
                   default=float("inf"))

    def interactive_waiting(self) -> bool:
        """True while interactive work is queued (a lock-free snapshot: a
        background slice polls it to yield the writer early)."""
        return bool(self._lanes[0])

    def requeue(self, requests: list[Request]) -> None:
        """Put back, at the head of their lanes, requests a batch took but did
        not start (the worker's slice ended). Their order and numbers are kept;
        they were accepted already, so neither the bound nor close() refuses them.
        """
        with self._mutex:
            for request in reversed(requests):
                self._lanes[request.priority].appendleft(request)
                if request.kind is _EXCLUSIVE:
                    self._exclusive[request.priority] += 1
            self._count += len(requests)
            if self._sleepers:
                self._not_empty.notify()

    def drain(self) -> list[Request]:
        """Remove and return every queued request (for the fail-everything path)."""
        with self._mutex:
            taken = [request for lane in self._lanes for request in lane]
            for lane in self._lanes:
                lane.clear()
            self._count = 0
            self._exclusive = [0] * len(self._lanes)
            if self._blocked:
                self._not_full.notify_all()
            return taken


def fail_pending(requests: list[Request], make_error: Callable[[], BaseException]) -> None:
    """Answer every request not yet answered with an error; skip cancelled ones.

    The one fail-everything path: used when ``close()`` gives up waiting and
    when the worker dies. Each request gets its own exception object, so one
    caller's traceback never grows from another's.
    """
    for request in requests:
        if request.claim():
            request.set_exception(make_error())
