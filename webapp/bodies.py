"""Request bodies: read as JSON, bounded in size, in time, and in the threads they hold.

:class:`BodyReader` is the ``tools.json_in`` processor. It reads at most
``MAX_BODY`` bytes, lets only ``slots`` request threads read bodies at the same
time (a client that sends less than its Content-Length, or trickles it, can
hold at most those threads, never all of them), answers 408 when the client
stops sending for ``server.socket_timeout`` seconds and 400 when the body ends
short. :func:`stop_reading` is for a body that nobody reads: the server (cheroot)
would read what is left of it after the answer, on the request thread, for as
long as the client takes; the app's headers tool calls it (security.py).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import cherrypy

MAX_BODY = 64 * 1024  # bytes of JSON a POST may carry
DRAIN_MAX = 8 * 1024 * 1024  # a larger body is read (and dropped) up to this before the 413
BODY_DEADLINE_S = 5.0  # a body must arrive within this
REAP_WAIT_S = 0.5  # how long a request waits for a slot that a cut-off read gives back
RETRY_AFTER_S = 1


def _connection_fd(request: Any) -> int | None:
    """The request's connection, as a file descriptor: cheroot's body reader
    (``request.rfile``) wraps the connection's buffered reader, whose
    ``fileno()`` is the socket's. None on another server, or over TLS."""
    reader = getattr(request.rfile, "rfile", None)
    try:
        return int(reader.fileno())  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError, TypeError):
        return None


def stop_reading(request: Any) -> bool:
    """Shut the read side of the request's connection: a read blocked on it
    returns end-of-file at once; answers can still be written. Returns
    whether it could."""
    fd = _connection_fd(request)
    if fd is None:
        return False
    try:
        with socket.socket(fileno=os.dup(fd)) as dup:  # closing the dup leaves fd open
            dup.shutdown(socket.SHUT_RD)
    except OSError:
        return False
    return True


class BodyReader:
    """The ``tools.json_in`` processor: bounded, timed, and at most ``slots``
    threads at once. Sets ``request.json``. Thread-safe.

    A body must arrive within ``deadline`` seconds. A read past its deadline
    is cut off (its connection's read side shut) by the next request that
    finds every slot taken, so a client trickling its body cannot keep a slot
    for longer while others wait; one that stops sending is answered 408 after
    ``server.socket_timeout`` seconds of silence by the read itself.
    """

    def __init__(self, slots: int, deadline: float = BODY_DEADLINE_S) -> None:
        if slots < 1:
            raise ValueError(f"body slots must be >= 1, not {slots}")
        self.slots = slots
        self.deadline = deadline
        self._slots = threading.BoundedSemaphore(slots)
        # _lock guards _reading (thread ident -> (deadline, request)) and _cut
        # (the idents whose read was cut off at its deadline).
        self._lock = threading.Lock()
        self._reading: dict[int, tuple[float, Any]] = {}
        self._cut: set[int] = set()

    def __call__(self, entity: Any) -> None:
        request = cherrypy.serving.request
        # When every slot is taken, cut the overdue reads off: their threads give
        # their slots back as soon as they see the end of their bodies.
        if not self._slots.acquire(blocking=False) and not (
                self._cut_overdue() and self._slots.acquire(timeout=REAP_WAIT_S)):
            raise cherrypy.HTTPError(503, "too many request bodies on the way; retry")
        me = threading.get_ident()
        with self._lock:
            self._reading[me] = (time.monotonic() + self.deadline, request)
        try:
            raw = self._read(entity)
        finally:
            with self._lock:
                del self._reading[me]
                cut = me in self._cut
                self._cut.discard(me)
            self._slots.release()
        if cut:
            raise cherrypy.HTTPError(408, f"the body did not arrive within {self.deadline:g} s")
        if raw is None:
            raise cherrypy.HTTPError(400, "the body is shorter than its Content-Length")
        try:
            request.json = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise cherrypy.HTTPError(400, "the body is not valid JSON") from None

    @property
    def reading(self) -> int:
        """How many bodies are being read now (a snapshot: for tests and monitoring)."""
        with self._lock:
            return len(self._reading)

    def _cut_overdue(self) -> int:
        now = time.monotonic()
        with self._lock:
            overdue = [(ident, request) for ident, (deadline, request) in self._reading.items()
                       if deadline <= now and ident not in self._cut]
            for ident, request in overdue:
                if stop_reading(request):
                    self._cut.add(ident)
            return len(self._cut)

    def _read(self, entity: Any) -> bytes | None:
        """The body, or None when it ended before its Content-Length."""
        length = entity.length  # None when chunked
        try:
            if length is not None and length > MAX_BODY:
                _too_large(entity.fp, length)
            raw = bytes(entity.fp.read(MAX_BODY + 1))
            if len(raw) > MAX_BODY:
                _too_large(entity.fp, None)
        except TimeoutError:
            # Python refuses any further read of a socket file that timed out, and
            # the server would try one to drain the rest of the body after the
            # answer (the answer would be lost): there is nothing left to drain.
            request_file = cherrypy.serving.request.rfile
            if getattr(request_file, "remaining", 0) > 0:
                request_file.remaining = 0
            raise cherrypy.HTTPError(408, "the body stopped arriving before its end") from None
        return None if length is not None and len(raw) < length else raw


def _reject_constant(token: str) -> None:
    raise ValueError(f"{token} is not JSON")


def _too_large(fp: Any, length: int | None) -> None:
    """Answer 413. Up to DRAIN_MAX bytes of the body (``length``, or unknown
    when chunked) are read and dropped first: the server closes the connection
    after a 413, and a client still sending would get a reset, not the answer.
    Past DRAIN_MAX it is not worth reading (server.max_request_body_size in
    app.conf refuses such a body before the app, in plain text)."""
    left = DRAIN_MAX if length is None else length
    if left <= DRAIN_MAX:
        while left > 0:
            chunk = fp.read(min(left, 64 * 1024))
            if not chunk:
                break
            left -= len(chunk)
    raise cherrypy.HTTPError(413, f"the body may hold at most {MAX_BODY} bytes")
