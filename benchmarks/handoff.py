"""Per-call overhead of the gateway over a direct apsw call, one thread.

Run from the repository root::

    .venv/bin/python -m benchmarks.handoff             # 20,000 calls per figure
    .venv/bin/python -m benchmarks.handoff --calls 5000

It prints microseconds per call for: the bare hand-off (``flush()``: a round
trip through the queue with no SQL), a one-row INSERT through the gateway, the
same INSERT on a direct apsw connection in autocommit, and a point read
through the writer, through an inline reader and through a reader thread.
``synchronous=OFF`` keeps fsync out of the figures, so what is left is the
gateway's own cost. Each figure comes from a fresh database, after a wait for
a quiet machine (1-minute load average under 0.9, at most 90 s; ``--no-wait-quiet``,
``--quiet-below``, ``--quiet-max-wait``: see ``quiet.py``), with the load
average before -> after it beside it and one line saying whether the run was quiet.
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
from .quiet import QuietWait, add_quiet_options, cell_load, load_text, quiet_line, quiet_wait

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


def paths(calls: int) -> list[tuple[str, Callable[[], float]]]:
    """(label, figure) for each path measured, in order."""
    return [
        ("hand-off only: flush()", lambda: gateway_figure(calls, "flush")),
        ("INSERT through the gateway", lambda: gateway_figure(calls, "insert")),
        ("INSERT on a direct apsw connection", lambda: direct_figure(calls)),
        ("point read through the writer (readers=0)", lambda: gateway_figure(calls, "read")),
        ("point read, readers=2 inline", lambda: gateway_figure(calls, "read", readers=2)),
        ("point read, readers=2 threads",
         lambda: gateway_figure(calls, "read", readers=2, read_mode="threads")),
    ]


def measure(calls: int, quiet: QuietWait) -> list[tuple[str, float, dict[str, object]]]:
    """(label, us per call, load of that path) for each path, each after a quiet wait."""
    out = []
    for name, figure in paths(calls):
        with cell_load(quiet) as load:
            us = figure()
        out.append((name, us, load))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=whole, default=20_000)
    add_quiet_options(parser)
    args = parser.parse_args()
    quiet = quiet_wait(args)
    rows = measure(args.calls, quiet)
    print(f"one thread, synchronous=OFF, {args.calls:,} calls each, "
          f"SQLite {apsw.sqlite_lib_version()}, {os.cpu_count()} cpus")
    print(quiet_line([load for _, _, load in rows]))
    print(quiet.line())
    print_table(("path", "us/call", "load"),
                [(name, f"{us:.1f}", load_text(load)) for name, us, load in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
