"""Per-call overhead of the gateway over a direct apsw call, one thread.

Run from the repository root::

    .venv/bin/python -m benchmarks.handoff             # 20,000 calls per figure
    .venv/bin/python -m benchmarks.handoff --calls 5000

It prints microseconds per call for: the bare hand-off (``flush()``: a round
trip through the queue with no SQL), a one-row INSERT through the gateway, the
same INSERT on a direct apsw connection in autocommit, and a point read
through the writer, through an inline reader and through a reader thread.
``synchronous=OFF`` keeps fsync out of the figures, so what is left is the
gateway's own cost. Each figure comes from a fresh database.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

import apsw


from .harness import print_table, whole

from sqlite_gateway import Gateway

SCHEMA = "CREATE TABLE log(id INTEGER PRIMARY KEY, page INTEGER, at REAL)"
INSERT = "INSERT INTO log(page, at) VALUES (?, ?)"
READ = "SELECT page, at FROM log WHERE id = ?"


def per_call_us(calls: int, fn: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls * 1e6


def gateway_figure(calls: int, what: str, **options: object) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        with Gateway(os.path.join(tmp, "h.db"), synchronous="OFF", **options) as db:  # type: ignore[arg-type]
            db.execute(SCHEMA)
            db.execute(INSERT, (1, 0.0))
            if what == "flush":
                return per_call_us(calls, lambda i: db.flush())
            if what == "insert":
                return per_call_us(calls, lambda i: db.execute(INSERT, (i % 10, 1.0)))
            return per_call_us(calls, lambda i: db.execute(READ, (1,)))


def direct_figure(calls: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = apsw.Connection(os.path.join(tmp, "h.db"))
        conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF").fetchall()
        conn.execute(SCHEMA)
        try:
            return per_call_us(calls, lambda i: conn.execute(INSERT, (i % 10, 1.0)).fetchall())
        finally:
            conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=whole, default=20_000)
    calls = parser.parse_args().calls
    rows = [
        ("hand-off only: flush()", gateway_figure(calls, "flush")),
        ("INSERT through the gateway", gateway_figure(calls, "insert")),
        ("INSERT on a direct apsw connection", direct_figure(calls)),
        ("point read through the writer (readers=0)", gateway_figure(calls, "read")),
        ("point read, readers=2 inline", gateway_figure(calls, "read", readers=2)),
        ("point read, readers=2 threads",
         gateway_figure(calls, "read", readers=2, read_mode="threads")),
    ]
    print(f"one thread, synchronous=OFF, {calls:,} calls each, "
          f"SQLite {apsw.sqlite_lib_version()}, {os.cpu_count()} cpus")
    print_table(("path", "us/call"), [(name, f"{us:.1f}") for name, us in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
