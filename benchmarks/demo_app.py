"""``python -m benchmarks.demo_app --backend gateway|retry|busy [webapp options]``:
the demo app on the gateway or on an old way, for the load benchmarks.

The demo app (``python -m webapp``) always runs on a Gateway: production
configuration has no way to choose a slower one. This entry point serves the
same app, unchanged, with the database made by one of the baselines of
:mod:`benchmarks.baselines` (passed to the app as its factory), so that the
load sweep can compare the ways on one code path. Every other option is
``python -m webapp``'s (``--port``, ``--db``, ``--config``).

Importable (the load sweep and the load tests use it; importing it imports no
web framework): :func:`start_app` runs that entry point as a child and returns
once it answers, :func:`stop_app` stops it gracefully, :func:`check_db` checks
the database it leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import apsw

from sqlite_gateway import Gateway

from .baselines import BusyGateway, RetryGateway
from .harness import child_env, python_m

READY_TIMEOUT_S = 30.0  # the app's start, bounded
STOP_TIMEOUT_S = 30.0   # a graceful stop (it drains), bounded
ADMIN_TOKEN_ENV = "SQLITE_GATEWAY_ADMIN_TOKEN"  # the app's admin credential comes from here

# --backend -> the factory the app is given: each makes its database from (path, **options).
FACTORIES: dict[str, Callable[..., Any]] = {
    "gateway": Gateway,
    "retry": RetryGateway,  # a connection per thread, backoff and retry
    "busy": BusyGateway,    # a connection per thread, busy timeout, BEGIN IMMEDIATE
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=tuple(FACTORIES), default="gateway")
    args, rest = parser.parse_known_args(argv)
    from webapp.__main__ import main as serve  # cherrypy only when serving
    serve(rest, factory=FACTORIES[args.backend],
          prog=f"python -m benchmarks.demo_app --backend {args.backend}")



# -- the app as a benchmark's child ------------------------------------------------------

def free_port() -> int:
    """A loopback port free now (the app binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats_status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", "/api/stats")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def start_app(db_path: str, port: int, backend: str, workdir: str, token: str,
              ready_timeout: float = READY_TIMEOUT_S) -> subprocess.Popen[bytes]:
    """``python -m benchmarks.demo_app --backend B`` as a child in ``workdir`` (its
    backups land there; its output goes to ``workdir/app.log``), with ``token`` as the
    admin credential; returned once ``GET /api/stats`` answers 200.

    Raises:
        RuntimeError: the app exited, or did not answer within ``ready_timeout``.
    """
    log_path = os.path.join(workdir, "app.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            python_m(__spec__.name, "--backend", backend, "--port", str(port), "--db", db_path),
            cwd=workdir, env=child_env(**{ADMIN_TOKEN_ENV: token}), stdout=log,
            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:  # bounded
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}) before answering; "
                               f"see {log_path}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _stats_status(port) == 200:
                return proc
        time.sleep(0.1)  # polling a child process's port: there is no event to wait on
    stop_app(proc)
    raise RuntimeError(f"the app did not answer within {ready_timeout:.0f} s; see {log_path}")


def stop_app(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM (graceful: the gateway drains), a bounded wait, then SIGKILL.
    Returns whether it stopped gracefully."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return False


def check_db(path: str) -> list[str]:
    """The demo database's invariants, checked with apsw once the app has exited
    (this process never opens it with the stdlib ``sqlite3``). Returns the problems
    found (empty: all good): ``quick_check``; every page's counter equals its logged
    views (the rollup job moves old rows into hourly counts); no page over its cap;
    no negative balance; no bet on a closed match placed after its close."""
    problems: list[str] = []
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)  # RW: may recover the WAL
    try:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return list(conn.execute(sql))

        quick = rows("PRAGMA quick_check")
        if quick != [("ok",)]:
            problems.append(f"quick_check: {quick[:3]}")
        for name, views, logged in rows(
                "SELECT p.name, p.views,"
                " (SELECT count(*) FROM page_views v WHERE v.page = p.name)"
                " + (SELECT coalesce(sum(h.views), 0) FROM hourly_views h WHERE h.page = p.name)"
                " FROM pages p ORDER BY p.name"):
            if views != logged:
                problems.append(f"page {name!r}: views {views} != logged {logged}")
        over = rows("SELECT name, views, cap FROM pages WHERE views > cap")
        if over:
            problems.append(f"pages over their cap: {over[:3]}")
        negative = rows("SELECT id, balance FROM accounts WHERE balance < 0")
        if negative:
            problems.append(f"negative balances: {negative[:3]}")
        late = rows("SELECT b.id, b.match, b.placed_at - m.closed_at FROM bets b"
                    " JOIN matches m ON m.id = b.match"
                    " WHERE m.status IN ('closed', 'settled') AND b.placed_at > m.closed_at")
        if late:
            worst = max(r[2] for r in late)
            problems.append(f"{len(late)} bet(s) placed after their match closed "
                            f"(up to {worst * 1000:.1f} ms after), e.g. bet {late[0][0]}")
    finally:
        conn.close()
    return problems


if __name__ == "__main__":
    main()
