"""Request heads: the request line and headers must all arrive within ``server.socket_timeout``.

cheroot (CherryPy's HTTP server) applies ``server.socket_timeout`` to each read
of the socket, so a client that sends one header line every 2 s is never silent
long enough to time out: twelve such clients held all ten request threads for
as long as they kept going. Here the whole head shares one deadline: each read
while a head is parsed waits at most what is left of ``socket_timeout``
(counted from the head's first read), and a head not complete by then is
answered 408 and its connection closed. Bodies keep their own rules
(bodies.py); idle keep-alive connections wait in cheroot's selector, holding no
thread, and their next head gets a fresh deadline.

:class:`HeadTimedServer` is CherryPy's own server class with that change; the
app selects it through CherryPy's ``server.instance`` setting (app.py). Over TLS
(a server whose SSL adapter makes its own socket files) heads are read as before.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import cheroot.server
from cheroot.makefile import MakeFile, StreamReader
from cherrypy._cpwsgi_server import CPWSGIHTTPRequest, CPWSGIServer

__all__ = ["HeadTimedServer"]


class _DeadlineSocketIO(socket.SocketIO):
    """A socket's raw reader whose reads, while ``deadline`` is set, together wait no
    longer than until it (each read's timeout is what is left of it)."""

    deadline: float | None = None
    idle_timeout: float | None = None  # the socket's own timeout, restored when disarmed

    def readinto(self, b: Any) -> int | None:
        deadline = self.deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timeout_occurred = True  # as SocketIO marks a timed-out read
                raise TimeoutError("timed out")  # cheroot answers 408 to these words
            idle = self.idle_timeout
            self._sock.settimeout(left if idle is None else min(left, idle))
        return super().readinto(b)


class _HeadTimedReader(StreamReader):  # type: ignore[misc]
    """cheroot's socket reader, over :class:`_DeadlineSocketIO`."""

    def __init__(self, sock: socket.socket, mode: str = "rb", bufsize: int = 8192) -> None:
        # StreamReader's own __init__ makes a plain SocketIO: skip to its base's.
        super(StreamReader, self).__init__(_DeadlineSocketIO(sock, mode), bufsize)
        self.bytes_read = 0


def _make_file(sock: socket.socket, mode: str = "r", bufsize: int = 8192) -> Any:
    return _HeadTimedReader(sock, mode, bufsize) if "r" in mode else MakeFile(sock, mode, bufsize)


class _HeadTimedRequest(CPWSGIHTTPRequest):  # type: ignore[misc]
    """CherryPy's request, its head read under one deadline."""

    def parse_request(self) -> None:
        raw = getattr(self.conn.rfile, "raw", None)
        if not isinstance(raw, _DeadlineSocketIO):  # a TLS adapter's file: as before
            super().parse_request()
            return
        idle = self.server.timeout
        if not idle:  # no socket timeout configured: nothing to bound the head by
            super().parse_request()
            return
        raw.idle_timeout = idle
        raw.deadline = time.monotonic() + idle
        try:
            super().parse_request()
        finally:
            raw.deadline = None
            with contextlib.suppress(OSError):  # the connection may be gone already
                self.conn.socket.settimeout(idle)  # bodies and keep-alive: per read again


class _HeadTimedConnection(cheroot.server.HTTPConnection):  # type: ignore[misc]
    RequestHandlerClass = _HeadTimedRequest

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, _make_file if makefile is MakeFile else makefile)


class HeadTimedServer(CPWSGIServer):  # type: ignore[misc]
    """CherryPy's HTTP server whose request heads must arrive within ``socket_timeout``.

    Made by CherryPy at ``server.start`` (config ``server.instance:
    "webapp.heads.HeadTimedServer"``), with the server adapter as argument.
    """

    ConnectionClass = _HeadTimedConnection

    def __init__(self, server_adapter: Any = None) -> None:
        if server_adapter is None:
            import cherrypy

            server_adapter = cherrypy.server
        super().__init__(server_adapter)
        # CPWSGIServer sets its request class on the connection class: ours extends it.
        self.ConnectionClass.RequestHandlerClass = _HeadTimedRequest
