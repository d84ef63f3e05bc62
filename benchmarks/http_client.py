"""A small HTTP/1.1 client on asyncio streams: the load sweep's (and nothing else's).

Keep-alive connections to one loopback port; a request takes an idle connection
or opens one, and is sent again once on a new connection when a kept-alive one
turns out closed before any answer (the server never read it), as HTTP client
libraries do. It reads chunked and Content-Length bodies. No TLS, no redirects:
it talks to the demo app only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any


def admin_headers(token: str) -> dict[str, str]:
    """How a request carries the admin credential (admin actions: creating accounts
    with a balance, matches, closes)."""
    basic = base64.b64encode(f"admin:{token}".encode()).decode()
    return {"Authorization": f"Basic {basic}"}


class HTTPError(Exception):
    """The connection failed or the answer was not HTTP."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """Keep-alive connections to one port; a request takes an idle one or opens one."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def request(self, method: str, path: str, body: Any = None, admin: bool = False,
                      sent: list[float] | None = None) -> Answer:
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if body is not None or method == "POST":
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        if admin:
            head += [f"{k}: {v}" for k, v in admin_headers(self.token).items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + data
        # A kept-alive connection the server closed meanwhile (its idle timeout) fails
        # before any answer: the server never read the request, so send it again, once,
        # on a new connection, as HTTP client libraries do.
        for reuse in (bool(self.idle), False):
            if reuse:
                reader, writer = self.idle.pop()
            else:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError as exc:
                    raise HTTPError(f"connect: {exc}") from None
                self.opened += 1
            keep = answered = False
            try:
                writer.write(raw)
                if sent is not None:
                    sent.append(time.monotonic())
                status_line = await reader.readline()
                answered = bool(status_line)
                if not answered:
                    raise HTTPError("connection closed before the answer")
                answer = await self._read(status_line, reader)
                keep = answer.headers.get("connection", "").lower() != "close"
                return answer
            except (OSError, asyncio.IncompleteReadError, ValueError, HTTPError) as exc:
                if reuse and not answered:
                    continue
                raise HTTPError(f"{type(exc).__name__}: {exc}") from None
            finally:
                if keep:
                    self.idle.append((reader, writer))
                else:  # also on a timeout (cancelled): the answer may still come
                    writer.close()
        raise AssertionError("unreachable: the second attempt returns or raises")

    @staticmethod
    async def _read(status_line: bytes, reader: asyncio.StreamReader) -> Answer:
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            headers["connection"] = "close"
        return Answer(status, headers, body)

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


def well_formed(path: str, answer: Answer) -> bool:
    """The body the endpoint promises: JSON for /api (an object), HTML otherwise."""
    if path.startswith("/api/"):
        try:
            return isinstance(json.loads(answer.body), dict)
        except ValueError:
            return False
    return b"<h1>" in answer.body
