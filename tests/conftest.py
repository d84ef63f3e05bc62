"""Shared fixtures: a database path in a temp dir, and a gateway that is always closed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from sqlite_gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.<name> args`` in a child, from the checkout's root."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


HANG_S = 30.0
"""How long a test waits for a state before it calls it a hang: a hang detector with a
wide margin (what it waits for takes milliseconds), never a timing goal."""


def in_thread(fn: Callable[[], Any], bound: float = 120) -> Any:
    """Run fn in a new (non-main) thread, where a gateway call may run in place; return what
    it returned or raise what it raised. ``bound`` detects a hang, it is not a timing goal."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised below, in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"still running after {bound} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def in_threads(fn: Callable[[], object], count: int, bound: float = 60) -> None:
    """Run fn in ``count`` threads at once; return when all are done, or raise the first
    error one of them raised. ``bound`` detects a hang, it is not a timing goal."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(bound)
    assert not any(thread.is_alive() for thread in threads), f"still running after {bound} s"
    if errors:
        raise errors[0]


def wait_until(condition: Callable[[], object], what: str, timeout: float = HANG_S) -> None:
    """Poll ``condition()`` until it is true; fail the test, naming ``what``, if it is
    still false after ``timeout`` seconds. For states another thread or process reaches
    with no event to wait on (a queue depth, a gateway's state); never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():  # bounded: the deadline
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s for {what}")
        time.sleep(0.002)  # a poll interval, not a guess at how long anything takes


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


@pytest.fixture
def gateway(db_path: str) -> Iterator[Gateway]:
    db = Gateway(db_path).start()
    db.execute("CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
    try:
        yield db
    finally:
        db.close(timeout=30)


def read_only(path: str) -> apsw.Connection:
    """An outside view of the file (apsw, the same SQLite as the gateway)."""
    return apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)


def scalar(path: str, sql: str, params: tuple[object, ...] = ()) -> object:
    conn = read_only(path)
    try:
        return conn.execute(sql, params).fetchall()[0][0]
    finally:
        conn.close()


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter that can import the project."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@contextlib.contextmanager
def child_python(code: str, *args: str, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """A child interpreter running ``code``; killed and reaped however the test ends."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                          **popen) as child:
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(30)


class WorkerBlocker:
    """Holds the worker inside an exclusive request until released.

    Lets a test queue requests behind it deterministically.
    """

    def __init__(self, db: Gateway) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._db = db
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.entered.wait(10), "worker never picked up the blocker"

    def _run(self) -> None:
        self._db.run_exclusive(self._block, timeout=None)

    def _block(self, conn: object) -> None:
        self.entered.set()
        assert self.release.wait(30), "blocker never released"

    def done(self) -> None:
        self.release.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture(scope="session", autouse=True)
def _cherrypy_engine_exits_at_the_end() -> Iterator[None]:
    """CherryPy's engine is a process-wide singleton: exit it once, after every test."""
    yield
    cp = sys.modules.get("cherrypy")
    if cp is not None and cp.engine.state != cp.engine.states.EXITING:
        cp.engine.exit()
