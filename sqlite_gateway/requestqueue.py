"""The bounded FIFO between callers and the worker: the gateway's front door.

One mutex guards everything here; the worker sleeps on one condition of it.
The queue decides acceptance: once ``close()`` has run, ``put()`` refuses with
:class:`GatewayClosed`, so nothing can slip in behind the stop.

Requests are kept in one deque per priority (lane 0 first) and numbered in
the order they were accepted; within a lane they leave in that order. The
bound covers all lanes together. Only one lane is used today.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .errors import GatewayClosed, Overloaded
from .request import STOP, Kind, Request, _Marker


class RequestQueue:
    def __init__(self, maxsize: int, lanes: int = 1) -> None:
        self.maxsize = maxsize
        # _mutex guards _lanes, _count, _seq and _closed. _not_empty is
        # notified when a request arrives or the queue closes (the worker waits).
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)
        self._lanes: list[deque[Request]] = [deque() for _ in range(lanes)]
        self._count = 0
        self._seq = 0
        self._closed: str | None = None  # the reason, once nothing more is accepted

    def __len__(self) -> int:
        return self._count  # a snapshot: approximate by the time it is read

    @property
    def closed_reason(self) -> str | None:
        return self._closed

    def put(self, request: Request) -> None:
        """Accept ``request`` or raise at once; never blocks on a full queue.

        Raises:
            GatewayClosed: ``close()`` has run (the reason says why).
            Overloaded: ``maxsize`` requests are already waiting.
        """
        with self._mutex:
            if self._closed is not None:
                raise GatewayClosed(self._closed)
            if self._count >= self.maxsize:
                raise Overloaded(self.maxsize)
            self._seq += 1
            request.seq = self._seq
            self._lanes[request.priority].append(request)
            self._count += 1
            self._not_empty.notify()

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
            return True

    def get_batch(self, batch_max: int, timeout: float | None = None) -> list[Request] | _Marker:
        """Wait for work; return the next batch, ``[]`` on timeout, or STOP.

        A batch is either one EXCLUSIVE request alone, or up to ``batch_max``
        consecutive other requests of the first non-empty lane. It takes what
        is there now: it never waits for a batch to fill.
        """
        with self._not_empty:
            while not self._count:
                if self._closed is not None:
                    return STOP
                if not self._not_empty.wait(timeout):
                    return []
            lane = next(lane for lane in self._lanes if lane)
            batch = [lane.popleft()]
            if batch[0].kind is not Kind.EXCLUSIVE:
                while lane and len(batch) < batch_max and lane[0].kind is not Kind.EXCLUSIVE:
                    batch.append(lane.popleft())
            self._count -= len(batch)
            return batch

    def drain(self) -> list[Request]:
        """Remove and return every queued request (for the fail-everything path)."""
        with self._mutex:
            taken = [request for lane in self._lanes for request in lane]
            for lane in self._lanes:
                lane.clear()
            self._count = 0
            return taken


def fail_pending(requests: list[Request], make_error: Callable[[], BaseException]) -> None:
    """Answer every request not yet answered with an error; skip cancelled ones.

    The one fail-everything path: used when ``close()`` gives up waiting and
    when the worker dies. Each request gets its own exception object, so one
    caller's traceback never grows from another's.
    """
    for request in requests:
        if request.claim() and not request.future.done():
            request.set_exception(make_error())
