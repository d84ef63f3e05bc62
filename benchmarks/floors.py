"""The floors the gateway is measured against: the simplest designs that could do its job.

Benchmarks only; never exported by the library. Each is as short as its
description, and each is correct: a caller hears back only after the COMMIT
that holds its work.

- :class:`BareLoop`: the bare group-commit loop, the floor of the gateway's own
  design in CPython: a deque and one Condition, a bare lock per request,
  ``BEGIN IMMEDIATE`` per batch, ``SAVEPOINT``/``RELEASE`` around each fn
  (``ROLLBACK TO`` on error), ``COMMIT``, then release each caller's lock. No
  stats, priorities, watchdog, guard or readers. Whatever the gateway pays
  above it is the cost of its own features.
- :class:`NaiveQueue`: what one writes first: ``queue.Queue`` plus a
  ``threading.Event`` per request, one worker, one transaction per request.
- :class:`WriteBehindLoop`: the bare write-behind loop (``writebehind.py``): a
  deque and one Condition, batches of up to 256 single statements (no
  savepoint: one statement is atomic by itself), one COMMIT each, a sequence
  number for ``flush()``; optionally a ``concurrent.futures.Future`` per row.

The first two run ``fn(conn, *args)`` with ``conn`` the raw apsw connection.
"""

from __future__ import annotations

import _thread
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import apsw


class _Call:
    __slots__ = ("args", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Any) -> None:
        self.fn, self.args, self.done = fn, args, done
        self.value: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class BareLoop:
    """The bare group-commit loop on ``conn`` (owned by its thread once started)."""

    def __init__(self, conn: apsw.Connection, batch_max: int = 256) -> None:
        self.conn, self.batch_max = conn, batch_max
        self.queue: deque[_Call | None] = deque()
        self.ready = threading.Condition(threading.Lock())  # the worker waits on it
        self.thread = threading.Thread(target=self.run, daemon=True)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in the next batch; return its value once committed."""
        done = _thread.allocate_lock()
        done.acquire()
        call = _Call(fn, args, done)
        with self.ready:
            self.queue.append(call)
            self.ready.notify()
        done.acquire()  # released by the worker after the COMMIT
        return call.result()

    def run(self) -> None:
        conn, q = self.conn, self.queue
        while True:
            with self.ready:
                while not q:
                    self.ready.wait()
                batch = [q.popleft() for _ in range(min(len(q), self.batch_max))]
            calls = [c for c in batch if c is not None]
            try:
                conn.execute("BEGIN IMMEDIATE")
                for c in calls:
                    conn.execute("SAVEPOINT r")
                    try:
                        c.value = c.fn(conn, *c.args)
                    except Exception as exc:  # goes back to its own caller
                        c.error = exc
                        conn.execute("ROLLBACK TO r")
                    conn.execute("RELEASE r")
                conn.execute("COMMIT")
            except apsw.Error as exc:  # BEGIN/COMMIT failed: nothing of the batch is kept
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
                for c in calls:
                    c.error = exc
            for c in calls:
                c.done.release()
            if len(calls) < len(batch):
                return  # a None in the batch: stop

    def start(self) -> BareLoop:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.ready:
            self.queue.append(None)
            self.ready.notify()
        self.thread.join()


class NaiveQueue:
    """queue.Queue + an Event per request, one worker, one transaction per request."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.queue: queue.Queue[_Call | None] = queue.Queue()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        call = _Call(fn, args, threading.Event())
        self.queue.put(call)
        call.done.wait()  # set by the worker after the COMMIT
        return call.result()

    def run(self) -> None:
        conn = self.conn
        while (call := self.queue.get()) is not None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                call.value = call.fn(conn, *call.args)
                conn.execute("COMMIT")
            except Exception as exc:
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
                call.error = exc
            call.done.set()

    def start(self) -> NaiveQueue:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()


class WriteBehindLoop:
    """The bare write-behind loop on ``conn``; ``futures``: a Future per row."""

    def __init__(self, conn: apsw.Connection, futures: bool, batch_max: int = 256) -> None:
        self.conn, self.futures, self.batch_max = conn, futures, batch_max
        self.queue: deque[tuple[str, Any, Future[None] | None]] = deque()
        lock = threading.Lock()  # guards queue, accepted, committed, stopping
        self.work = threading.Condition(lock)  # the worker waits on it
        self.flushed = threading.Condition(lock)  # flush() waits on it
        self.accepted = self.committed = self.failed = 0  # rows; failed: for the check
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def submit(self, sql: str, params: Any) -> Future[None] | None:
        """Queue one statement; its Future (or None) is completed after its COMMIT."""
        future: Future[None] | None = Future() if self.futures else None
        with self.work:
            self.queue.append((sql, params, future))
            self.accepted += 1
            self.work.notify()
        return future

    def flush(self) -> None:
        """Return once every row submitted before it is committed (or failed)."""
        with self.flushed:
            target = self.accepted
            while self.committed < target:
                self.flushed.wait()

    def run(self) -> None:
        conn, q = self.conn, self.queue
        while True:
            with self.work:
                while not q and not self.stopping:
                    self.work.wait()
                if not q:
                    return
                batch = [q.popleft() for _ in range(min(len(q), self.batch_max))]
            errors: dict[int, BaseException] = {}
            try:
                conn.execute("BEGIN IMMEDIATE")
                for i, (sql, params, _) in enumerate(batch):
                    try:
                        conn.execute(sql, params)
                    except apsw.Error as exc:  # SQLite undid that statement alone
                        errors[i] = exc
                conn.execute("COMMIT")
            except apsw.Error as exc:  # BEGIN/COMMIT failed: nothing of the batch is kept
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
                errors = dict.fromkeys(range(len(batch)), exc)
            if self.futures:
                for i, (_, _, future) in enumerate(batch):
                    assert future is not None
                    if i in errors:
                        future.set_exception(errors[i])
                    else:
                        future.set_result(None)
            with self.work:
                self.committed += len(batch)
                self.failed += len(errors)
                self.flushed.notify_all()

    def start(self) -> WriteBehindLoop:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.work:
            self.stopping = True
            self.work.notify()
        self.thread.join()
