"""The ``"threads"`` read mode: ``readers`` threads, each owning one
read-only connection for its whole life, fed by a queue (:class:`ReaderLanes`;
one hand-off each way, like the writer; for callers that must not block, such
as an event loop). One connection and its read: ``sqlite_gateway/reader.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .errors import GatewayClosed
from .memo import TextMemo
from .reader import _CLOSE_WAIT, Reader, Setup
from .request import STOP, Kind, Request, wait_for
from .requestqueue import RequestQueue, fail_pending
from .result import Result

logger = logging.getLogger(__name__)


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
        request = Request.submitted(Kind.EXECUTE, sql, params)
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
