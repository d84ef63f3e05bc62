"""Slow request heads cannot hold every request thread of the demo app.

Twelve connections each sending one header line every 2 s used to hold all ten
request threads for as long as they kept going: cheroot's ``socket_timeout`` (5 s)
bounds each read, and no read waited that long. The whole head now shares one
deadline of ``socket_timeout``.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import cherrypy
import pytest
from webapp_fixtures import Reply, live_app

pytestmark = pytest.mark.timeout(180)

THREADS = 10
TRICKLERS = 12
LINE_EVERY_S = 2.0  # under socket_timeout: no single read times out


def idle_threads() -> int:
    return int(cherrypy.server.httpserver.requests.idle)


def read_answer(s: socket.socket) -> bytes:
    """One whole answer: its head, then Content-Length bytes of body."""
    data = b""
    while True:  # bounded by the socket's timeout and the answer's length
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            found = re.search(rb"(?i)content-length: *(\d+)", head)
            if len(body) >= (int(found.group(1)) if found else 0):
                return data
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_trickled_headers_are_cut_off_and_others_are_served(tmp_path):
    conf = {"server.thread_pool": THREADS, "server.socket_timeout": 5}
    with live_app(str(tmp_path / "app.db"), **conf) as live:
        tricklers = []
        for _ in range(TRICKLERS):
            s = socket.create_connection(("127.0.0.1", live.port), timeout=30)
            s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            tricklers.append(s)
        try:
            # Every request thread is now reading a trickled head (the state, not a guess).
            assert wait_for(lambda: idle_threads() == 0), idle_threads()
            got: list[Reply | OSError] = []

            def get() -> None:
                try:
                    got.append(live.request("GET", "/api/stats", timeout=60))
                except OSError as exc:  # starved: the failure this test looks for
                    got.append(exc)

            getter = threading.Thread(target=get)
            getter.start()
            started = time.monotonic()
            line = 0
            # Keep trickling (bounded: 90 s) until the honest client is served.
            while getter.is_alive() and time.monotonic() - started < 90:
                line += 1
                for s in tricklers:
                    try:
                        s.sendall(f"X-Slow-{line}: x\r\n".encode())
                    except OSError:  # cut off by the server: what this test wants
                        pass
                getter.join(LINE_EVERY_S)  # the trickle's pace, and the wait for the answer
            getter.join(60)
            assert got and isinstance(got[0], Reply) and got[0].status == 200, got
            # The tricklers were answered 408 (or closed), not served late.
            answers = []
            for s in tricklers:
                s.settimeout(30)
                try:
                    answers.append(s.recv(4096))
                except OSError:
                    answers.append(b"")
            assert all(a.startswith(b"HTTP/1.1 408 ") or a == b"" for a in answers), answers
            assert any(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers
        finally:
            for s in tricklers:
                s.close()


def test_a_complete_head_and_keep_alive_are_unchanged(tmp_path):
    """The control: a head sent in pieces within the deadline is served, and a kept-alive
    connection's next head (a new deadline) is served too."""
    with live_app(str(tmp_path / "app.db"), **{"server.socket_timeout": 5}) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=30) as s:
            s.sendall(b"GET /api/stats HTTP/1.1\r\n")
            s.sendall(b"Host: 127.0.0.1\r\n\r\n")
            first = read_answer(s)
            assert first.startswith(b"HTTP/1.1 200 "), first
            assert wait_for(lambda: idle_threads() == THREADS)  # the connection waits idle
            s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            second = read_answer(s)
            assert second.startswith(b"HTTP/1.1 200 "), second
