"""The writer's own CPU per request, gateway against its floor, with no threads at all.

Run from the repository root::

    .venv/bin/python -m benchmarks.worker_rows                  # fn and post, 7 rounds
    .venv/bin/python -m benchmarks.worker_rows --mode post --rows 100000
    .venv/bin/python -m benchmarks.worker_rows --mode fn --fn noop   # the framework alone

Each round fills a queue with ``--rows`` requests, then runs it to the end on
this thread, alternating gateway and floor:

- ``fn``: ``transaction(pageview)`` requests (a waiting caller's each; ``--fn
  noop`` runs a fn that does nothing, ``--fn raw`` the two statements on the raw
  apsw connection), against the bare group-commit loop (``floors.BareLoop``)
  running the same fn;
- ``post``: posted single INSERTs, against the bare write-behind loop
  (``floors.WriteBehindLoop`` without futures);
- ``submit``: submitted ones (a Future each), against that loop with futures.

The gateway side is ``Worker.run_once()`` driven by hand: batches of 256, each
one transaction. The clock is this thread's CPU time (``time.thread_time``),
so a busy machine slows the figure less than wall time would; the best round
of each is printed (noise only slows), with microseconds per request and the
ratio. The database is on ``--dir`` (default ``/dev/shm`` when it exists)
with ``synchronous=NORMAL``: the disk is not what this measures.

What it isolates: the Python the writer runs per request (the batch loop,
turn marks, claims, the fn's handle and Results, the answers, the stats),
which the thread benchmarks mix with the callers' threads and the GIL's
hand-offs. In a group-commit cycle the writer runs this while every caller of
the batch waits, so it bounds throughput at many threads.
"""

from __future__ import annotations

import _thread
import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import apsw

from sqlite_gateway.request import Kind, Request
from sqlite_gateway.requestqueue import RequestQueue
from sqlite_gateway.stats import Stats
from sqlite_gateway.worker import Worker

from .floors import BareLoop, WriteBehindLoop, _Call
from .harness import csv_of, whole
from .workloads import BUMP_PAGE, INSERT_VIEW, create_schema, pageview

MODES = ("fn", "post", "submit")


def _noop(conn: Any, page: str, ts: float) -> None:
    return None


def _raw(conn: Any, page: str, ts: float) -> None:
    raw = getattr(conn, "_conn", conn)  # the apsw connection under the handle
    raw.execute(INSERT_VIEW, (page, ts))
    raw.execute(BUMP_PAGE, (page,))


FNS: dict[str, Callable[[Any, str, float], None]] = {
    "pageview": pageview, "noop": _noop, "raw": _raw}


def _request(mode: str, fn: Callable[..., Any], i: int) -> Request:
    params = ("p0", float(i))
    if mode == "fn":
        return Request.waiting(Kind.TRANSACTION, None, None, fn, params, None, 0)
    if mode == "post":
        return Request.posted(INSERT_VIEW, params, 0, lambda request, exc: None)
    return Request.submitted(Kind.EXECUTE, INSERT_VIEW, params)


def gateway_round(mode: str, fn: Callable[..., Any], rows: int, folder: str | None) -> float:
    """Requests per CPU-second of the gateway's writer."""
    with tempfile.TemporaryDirectory(dir=folder, prefix="sqlite-gateway-rows-") as tmp:
        path = os.path.join(tmp, "rows.db")
        create_schema(path)
        queue = RequestQueue(rows + 10)
        worker = Worker(path, queue, Stats(), batch_max=256, synchronous="NORMAL",
                        busy_timeout=5.0)
        worker.open()
        try:
            queue.put(_request(mode, fn, -1))  # its first run learns its shape
            worker.run_once(0)
            for i in range(rows):
                queue.put(_request(mode, fn, i))
            started = time.thread_time()
            while len(queue):
                worker.run_once(0)
            return rows / (time.thread_time() - started)
        finally:
            worker.close()


def floor_round(mode: str, fn: Callable[..., Any], rows: int, folder: str | None) -> float:
    """Requests per CPU-second of the floor's worker loop."""
    with tempfile.TemporaryDirectory(dir=folder, prefix="sqlite-gateway-rows-") as tmp:
        path = os.path.join(tmp, "rows.db")
        create_schema(path)
        conn = apsw.Connection(path)
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            if mode == "fn":
                loop = BareLoop(conn)
                for i in range(rows):
                    done = _thread.allocate_lock()
                    done.acquire()
                    loop.queue.append(_Call(fn, ("p0", float(i)), done))
                loop.queue.append(None)
                run = loop.run
            else:
                behind = WriteBehindLoop(conn, futures=mode == "submit")
                for i in range(rows):
                    behind.submit(INSERT_VIEW, ("p0", float(i)))
                behind.stopping = True
                run = behind.run
            started = time.thread_time()
            run()
            return rows / (time.thread_time() - started)
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", type=csv_of(str, MODES), default=("fn", "post"))
    parser.add_argument("--fn", choices=tuple(FNS), default="pageview")
    parser.add_argument("--rows", type=whole, default=20_000)
    parser.add_argument("--rounds", type=whole, default=7)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args(argv)
    fn = FNS[args.fn]
    for mode in args.mode:
        load = os.getloadavg()[0]
        gateway, floor = [], []
        for _ in range(args.rounds):  # alternating: both see the same machine
            gateway.append(gateway_round(mode, fn, args.rows, args.dir))
            floor.append(floor_round(mode, fn, args.rows, args.dir))
        g, f = max(gateway), max(floor)
        what = f"fn={args.fn}" if mode == "fn" else mode
        print(f"{what}: writer CPU per request, gateway {1e6 / g:.2f} us, floor {1e6 / f:.2f} us;"
              f" gateway / floor = {g / f:.2f}x in requests per CPU-second (best of "
              f"{args.rounds} rounds of {args.rows:,}; load average {load:.2f} -> "
              f"{os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
