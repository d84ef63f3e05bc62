"""The worker's own cost per write-behind row, with no threads at all.

Run from the repository root::

    .venv/bin/python -m benchmarks.worker_rows               # post and submit, 50,000 rows, 7 runs
    .venv/bin/python -m benchmarks.worker_rows --mode post --rows 100000

The queue is filled with ``--rows`` requests (``post``: answered by nobody;
``submit``: a Future each; ``execute``: a waiting caller's lock each), then
``Worker.run_once()`` is driven by hand until the queue is empty: batches of
256, each one transaction, as the worker thread runs them. The clock is this
thread's CPU time (``time.thread_time``), so a busy machine slows the figure
less than wall time would; the best run is the figure (noise only slows), the
median beside it. The database is on ``--dir`` (default: ``/dev/shm`` when it
exists: the disk is not what this measures) with ``synchronous=NORMAL``.

What it isolates: the per-row cost of the batch loop, the turn marks, the
statement and the answer, which the end-to-end ``benchmarks.writebehind``
mixes with the producer's thread and the GIL hand-offs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import apsw

from sqlite_gateway.request import Kind, Request
from sqlite_gateway.requestqueue import RequestQueue
from sqlite_gateway.stats import Stats
from sqlite_gateway.worker import Worker

from .harness import csv_of, whole

SQL = "INSERT INTO views(page, ts) VALUES (?, ?)"
MODES = ("post", "submit", "execute")


def _request(mode: str, i: int) -> Request:
    params = ("/page", float(i))
    if mode == "post":
        return Request.posted(SQL, params, 0, lambda request, exc: None)
    if mode == "submit":
        return Request.submitted(Kind.EXECUTE, SQL, params)
    return Request.waiting(Kind.EXECUTE, SQL, params)


def one_run(mode: str, rows: int, folder: str) -> float:
    """Rows per CPU-second of the worker for ``rows`` requests of ``mode``."""
    with tempfile.TemporaryDirectory(dir=folder, prefix="sqlite-gateway-rows-") as tmp:
        path = os.path.join(tmp, "rows.db")
        conn = apsw.Connection(path)
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("CREATE TABLE views(id INTEGER PRIMARY KEY, page TEXT, ts REAL)")
        conn.close()
        queue = RequestQueue(rows + 10)
        worker = Worker(path, queue, Stats(), batch_max=256, synchronous="NORMAL",
                        busy_timeout=5.0)
        worker.open()
        try:
            queue.put(_request(mode, -1))  # its first run learns it is one statement
            worker.run_once(0)
            for i in range(rows):
                queue.put(_request(mode, i))
            started = time.thread_time()
            while len(queue):
                worker.run_once(0)
            return rows / (time.thread_time() - started)
        finally:
            worker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", type=csv_of(str, MODES), default=("post", "submit"))
    parser.add_argument("--rows", type=whole, default=50_000)
    parser.add_argument("--runs", type=whole, default=7)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args(argv)
    for mode in args.mode:
        load = os.getloadavg()[0]
        runs = [one_run(mode, args.rows, args.dir) for _ in range(args.runs)]
        print(f"{mode}: worker rows/s best {max(runs):,.0f}, median "
              f"{statistics.median(runs):,.0f} ({args.runs} runs of {args.rows:,}; "
              f"load average {load:.2f} -> {os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
