"""What one request costs, step by step, in microseconds (one thread, no contention).

Run from the repository root::

    .venv/bin/python -m benchmarks.steps                  # synchronous=FULL, 20,000 per step
    .venv/bin/python -m benchmarks.steps --synchronous NORMAL --n 50000 --markdown

Each piece of a ``db.transaction(fn, page, ts)`` (fn: compare.py's pageview, two
statements) and of a point read is timed in isolation with
``time.perf_counter_ns`` over ``--n`` iterations (``--n-commit`` for the steps that
commit), against the library's internal classes driven by hand: the caller's
checks, the Request, ``RequestQueue.put``, the worker's ``get_batch``, claim,
savepoint, the fn on its conn handle, release, BEGIN/COMMIT, the answer and the
bookkeeping, a reader's routing, tracer and Result. A row's figure includes one
Python call (the timer's own cost is subtracted). Wake-ups cannot be timed alone:
they are derived, a hand-off round trip minus the pieces it is made of. The
``whole`` rows time the real thing end to end, to compare with the sum of its parts.

The internals change as the library does: a step whose names are gone prints
``n/a`` and the reason; the rest still run. Update ``STEPS`` below to follow.

The run is one cell: the 1-minute load average before and after it is printed,
with QUIET or BUSY (started at >= 1.0: the figures do not hold); it does not
wait for a quiet machine (see ``quiet.py``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import apsw

import sqlite_gateway.connection as gw_connection

from .floors import BareLoop, NaiveQueue
from .harness import machine_lines, print_header, print_table, whole
from .quiet import cell_load, quiet_line
from .strategies import apsw_connection
from .timing import Figure, Timer, clock, minus, us
from .workloads import READ_COUNTER, create_schema, pageview

try:  # one read-only connection (older commits kept it in readers.py with the pools)
    import sqlite_gateway.reader as gw_reader
except ImportError:  # pragma: no cover - run against an older commit
    import sqlite_gateway.readers as gw_reader  # type: ignore[no-redef]

try:  # the byte-bounded memo of SQL texts (older commits kept a plain set)
    import sqlite_gateway.memo as gw_memo
except ImportError:  # pragma: no cover - run against an older commit
    gw_memo = None  # type: ignore[assignment]
import sqlite_gateway.arguments as gw_arguments
import sqlite_gateway.request as gw_request
import sqlite_gateway.requestqueue as gw_queue
import sqlite_gateway.stats as gw_stats
import sqlite_gateway.worker as gw_worker
from sqlite_gateway import Gateway

ARGS = ("p3", 1.0)  # the fn's page and ts


class Bench(Timer):
    """The measuring context: fresh databases, the iteration counts, the timer."""

    def __init__(self, folder: str, n: int, n_commit: int, synchronous: str) -> None:
        super().__init__(n)
        self.folder, self.n_commit, self.synchronous = folder, n_commit, synchronous
        self.count = 0

    def db_path(self) -> str:
        self.count += 1
        path = os.path.join(self.folder, f"steps{self.count}.db")
        create_schema(path)
        return path

    def request(self, _: int = 0) -> Any:
        """A request as ``transaction()`` makes it (answered by a bare lock where the
        library has that mode, WAIT; else with its Future)."""
        return gw_request.Request.waiting(gw_request.Kind.TRANSACTION, None, None, pageview,
                                          ARGS, {}, 0)

    def worker(self) -> Any:
        queue = gw_queue.RequestQueue(10**9)
        worker = gw_worker.Worker(self.db_path(), queue, gw_stats.Stats(), batch_max=256,
                                  synchronous=self.synchronous, busy_timeout=5.0)
        worker.open()
        return worker


# -- the steps: (side, step, how it is measured) ---------------------------------------


def caller_checks(b: Bench) -> Figure:
    check = gw_arguments.lane_of
    return b.each(lambda _: (callable(pageview), check("interactive")))


def caller_request(b: Bench) -> Figure:
    return b.each(b.request)


def caller_enqueue(b: Bench) -> Figure:
    queue = gw_queue.RequestQueue(10**9)
    figure = b.each(queue.put, b.request)
    queue.drain()
    return figure


def caller_wait_answered(b: Bench) -> Figure:
    def answered(_: int) -> Any:
        request = b.request()
        request.set_result(None)
        return request
    return b.each(lambda r: gw_request.wait_for(r, 30.0, None), answered)


def worker_take(b: Bench) -> Figure:
    queue = gw_queue.RequestQueue(10**9)
    return b.each(lambda _: queue.get_batch(256, 0), lambda i: queue.put(b.request()))


def worker_claim(b: Bench) -> Figure:
    return b.each(lambda r: r.claim(), b.request)


def _in_transaction(b: Bench, body: Callable[[Any], Figure]) -> Figure:
    worker = b.worker()
    try:
        worker.link.exec(worker.link.sql["begin"])
        figure = body(worker)
        worker.link.exec(worker.link.sql["commit"])
        return figure
    finally:
        worker.close()


def worker_savepoint(b: Bench) -> Figure:
    def body(w: Any) -> Figure:
        return b.each(lambda _: w._exec(w._sql["savepoint"]),
                      lambda i: i and w._exec(w._sql["release"]))
    return _in_transaction(b, body)


def worker_release(b: Bench) -> Figure:
    def body(w: Any) -> Figure:
        return b.each(lambda _: w._exec(w._sql["release"]),
                      lambda i: w._exec(w._sql["savepoint"]))
    return _in_transaction(b, body)


def worker_handle(b: Bench) -> Figure:
    def body(w: Any) -> Figure:
        return b.each(lambda _: gw_connection.Connection(w._conn, w._guard).close())
    return _in_transaction(b, body)


def worker_run_fn(b: Bench) -> Figure:
    def body(w: Any) -> Figure:
        handle = gw_connection.Connection(w._conn, w._guard)
        return b.each(lambda _: pageview(handle, *ARGS))
    return _in_transaction(b, body)


def floor_run_fn(b: Bench) -> Figure:
    conn = apsw_connection(b.db_path(), b.synchronous, 5.0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        figure = b.each(lambda _: pageview(conn, *ARGS))
        conn.execute("COMMIT")
        return figure
    finally:
        conn.close()


def worker_commit(b: Bench) -> Figure:
    """BEGIN IMMEDIATE + COMMIT of one pageview (at one thread a batch is one request)."""
    worker = b.worker()
    times = []
    try:
        for _ in range(b.n_commit):
            t0 = clock()
            worker.link.exec(worker.link.sql["begin"])
            t1 = clock()
            pageview(worker.link.conn, *ARGS)
            t2 = clock()
            worker.link.exec(worker.link.sql["commit"])
            times.append(clock() - t2 + t1 - t0)
        return b.figure(times, pairs=2)
    finally:
        worker.close()


def worker_answer(b: Bench) -> Figure:
    return b.each(lambda r: r.set_result(None), lambda i: b.request())


def worker_bookkeeping(b: Bench) -> Figure:
    """Per request at one thread: the outcome, the turn's marks, the stats of its batch."""
    stats, turn = gw_stats.Stats(), gw_worker.Turn()
    outcome = getattr(gw_worker, "_Outcome", None)  # gone where outcomes live on the request

    def piece(r: Any) -> None:
        turn.begin(None)
        turn.begin(r)
        turn.end_request()
        if outcome is not None:
            outcome(r, True, None)
        turn.begin(None, committing=True)
        stats.record_batch(1, committed=True)
        stats.record_answers([time.monotonic() - r.enqueued], 0)
        turn.idle()
    return b.each(piece, b.request)


def worker_turn(b: Bench) -> Figure:
    """Worker.run_once() by hand on one queued request: the worker's whole share."""
    worker = b.worker()
    try:
        return b.each(lambda _: worker.run_once(0),
                      lambda i: worker.queue.put(b.request()), b.n_commit)
    finally:
        worker.close()


def handoff_round_trip(b: Bench) -> Figure:
    """A request through a worker thread that only answers: caller and worker pieces
    plus two wake-ups (the worker's, the caller's)."""
    queue = gw_queue.RequestQueue(10**9)

    def serve() -> None:
        while isinstance(batch := queue.get_batch(256), list):
            for r in batch:
                r.claim()
                r.set_result(None)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        def trip(_: Any) -> None:
            r = b.request()
            queue.put(r)
            gw_request.wait_for(r, 30.0, None)
        return b.each(trip)
    finally:
        queue.close("done")
        thread.join(30)


def reader_steps(b: Bench) -> dict[str, Figure]:
    """A point read: the gateway's whole call, the inline readers' part, one Reader,
    run_sql without the tracer and authorizer, and a raw apsw read (the floor)."""
    path, params = b.db_path(), ("p3",)
    try:
        reader = gw_reader.Reader(path, 5.0)
        read = reader.read
    except TypeError:  # Reader(path, busy_timeout, vfs, known_reads); read(..., deadline, timeout)
        known = gw_memo.TextMemo() if gw_memo is not None else set()
        reader = gw_reader.Reader(path, 5.0, None, known)
        read = functools.partial(reader.read, deadline=None, timeout=None)
    plain = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    guard, run_sql = gw_connection.TransactionGuard(), gw_connection.run_sql
    try:
        with Gateway(path, readers=1, synchronous=b.synchronous) as db:
            db.execute(READ_COUNTER, params)  # this thread adopts its reader
            readers = db.core.readers
            return b.interleaved({
                "gateway": lambda: db.execute(READ_COUNTER, params),
                "readers": lambda: readers.read(READ_COUNTER, params, 30.0),
                "reader": lambda: read(READ_COUNTER, params),
                "run_sql": lambda: run_sql(plain, guard, READ_COUNTER, params),
                "raw": lambda: plain.execute(READ_COUNTER, params).fetchall()}, b.n)
    finally:
        reader.close()
        plain.close()


def whole_calls(b: Bench) -> dict[str, Figure]:
    """db.transaction(pageview, ...) end to end, and the same on the two floors
    (each on its own file, called in turn)."""
    conns = [apsw_connection(b.db_path(), b.synchronous, 5.0) for _ in range(2)]
    bare, naive = BareLoop(conns[0]).start(), NaiveQueue(conns[1]).start()
    try:
        with Gateway(b.db_path(), synchronous=b.synchronous) as db:
            return b.interleaved({
                "gateway": lambda: db.transaction(pageview, *ARGS),
                "bare": lambda: bare.call(pageview, *ARGS),
                "naive": lambda: naive.call(pageview, *ARGS)}, b.n_commit)
    finally:
        bare.stop()
        naive.stop()
        for conn in conns:
            conn.close()


STEPS: list[tuple[str, str, Callable[[Bench], Figure]]] = [
    ("caller", "checks (callable, priority)", caller_checks),
    ("caller", "Request object, as transaction() makes it", caller_request),
    ("caller", "enqueue: RequestQueue.put", caller_enqueue),
    ("caller", "wait_for, answer already there", caller_wait_answered),
    ("worker", "take: get_batch, one request queued", worker_take),
    ("worker", "claim (set_running_or_notify_cancel)", worker_claim),
    ("worker", "SAVEPOINT", worker_savepoint),
    ("worker", "conn handle: make and close", worker_handle),
    ("worker", "run fn: 2 statements through the handle", worker_run_fn),
    ("floor", "run fn: 2 statements on raw apsw", floor_run_fn),
    ("worker", "RELEASE", worker_release),
    ("worker", "commit share: BEGIN + COMMIT (batch of 1)", worker_commit),
    ("worker", "answer: set_result", worker_answer),
    ("worker", "bookkeeping: outcome, turn marks, stats", worker_bookkeeping),
    ("worker", "whole: Worker.run_once, one request", worker_turn),
    ("hand-off", "round trip through an answer-only thread", handoff_round_trip),
]


def measure(b: Bench, notes: list[str]) -> list[tuple[str, ...]]:
    """The table's rows; why a step is n/a goes to ``notes``."""
    rows: list[tuple[str, ...]] = []
    figures: dict[str, Figure] = {}

    def missing(side: str, step: str, exc: Exception) -> None:
        rows.append((side, step, "n/a", "-"))
        notes.append(f"{step}: {type(exc).__name__}: {exc}")

    for side, step, fn in STEPS:
        try:
            figures[fn.__name__] = fn(b)
        except Exception as exc:  # an internal name changed: say which, go on
            missing(side, step, exc)
            continue
        rows.append((side, step, *us(figures[fn.__name__])))
    parts = ("caller_request", "caller_enqueue", "caller_wait_answered", "worker_take",
             "worker_claim", "worker_answer")
    if all(name in figures for name in ("handoff_round_trip", *parts)):
        wake = minus(figures["handoff_round_trip"], *(figures[p] for p in parts), share=0.5)
        rows.append(("caller/worker", "wake-up, each of 2 (derived: round trip - parts)",
                     *us(wake)))
    try:
        got = reader_steps(b)
        rows += [
            ("reader", "routing: gateway.execute - readers.read",
             *us(minus(got["gateway"], got["readers"]))),
            ("reader", "readers.read - Reader.read (lookup, lock, counts)",
             *us(minus(got["readers"], got["reader"]))),
            ("reader", "tracer + authorizer: Reader.read - run_sql",
             *us(minus(got["reader"], got["run_sql"]))),
            ("reader", "result: run_sql - raw execute + fetchall",
             *us(minus(got["run_sql"], got["raw"]))),
            ("reader", "whole: db.execute(point read), readers=1", *us(got["gateway"])),
            ("floor", "whole: raw apsw point read", *us(got["raw"])),
        ]
    except Exception as exc:
        missing("reader", "the reader's steps (reader_steps)", exc)
    try:
        got = whole_calls(b)
        rows += [("whole", "db.transaction(pageview), 1 thread", *us(got["gateway"])),
                 ("floor", "bare loop call, 1 thread", *us(got["bare"])),
                 ("floor", "naive queue call, 1 thread", *us(got["naive"]))]
    except Exception as exc:
        missing("whole", "the whole calls (whole_calls)", exc)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=whole, default=20_000, help="iterations per step")
    parser.add_argument("--n-commit", type=whole, default=500,
                        help="iterations of the steps that commit (default 500)")
    parser.add_argument("--synchronous", type=str.upper, default="FULL",
                        choices=("FULL", "NORMAL", "OFF"))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-steps-") as folder, \
            cell_load() as load:
        rows = measure(Bench(folder, args.n, args.n_commit, args.synchronous), notes)
    print_header(machine_lines(f"one thread, synchronous={args.synchronous}, {args.n:,} "
                               f"iterations per step ({args.n_commit:,} where it commits)"),
                 args.markdown)
    print(quiet_line([load]))
    print()
    print_table(("side", "step", "median us", "mean us"), rows, args.markdown, left=2)
    for note in notes:
        print(f"{'- ' if args.markdown else ''}n/a: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
