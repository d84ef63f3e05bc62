"""Group commit on vs off: throughput and latency of small write transactions.

Run from the repository root::

    .venv/bin/python -m benchmarks.group_commit            # threads 1,8,32,64, 5 s per cell
    .venv/bin/python -m benchmarks.group_commit --quick    # threads 1,8,32, 1.5 s per cell
    .venv/bin/python -m benchmarks.group_commit --markdown # the table as Markdown (README)

Options: ``--threads 1,8,32,64``, ``--seconds 5``, ``--synchronous FULL|NORMAL``,
``--no-wait-quiet``, ``--quiet-below 0.9``, ``--quiet-max-wait 90`` (before each
cell, wait until the 1-minute load average is under 0.9, at most 90 s; each
cell's load before and after is printed, BUSY when it started at >= 1.0).

Each operation is one ``db.transaction(fn)``: compare.py's ``pageview-fn``
(fn inserts a row into ``views`` and increments one of 10 hot rows of ``pages``,
chosen at random per op; the same tables and the same check, from ``workloads.py``).
N caller threads run operations back to back until a deadline, once with
group commit on (``batch_max=256``, the default) and once with it off
(``batch_max=1``: one COMMIT, hence one fsync, per operation).

Every cell (thread count x mode) runs in a fresh child process (this script
with a hidden ``--cell`` argument; it prints one JSON line) on a fresh database
in a temporary directory, so nothing leaks from one cell into the next. The
databases live under ``tempfile.gettempdir()``: set ``TMPDIR`` to measure
another disk; the fsync cost of that disk is what group commit amortises.

After each cell the parent checks the file: ``sum(pages.views) == count(*)
FROM views``, and ``views`` holds exactly one row per successful operation.
The script exits 1 if any cell had an error or failed that check. Progress
lines (with p50 latencies) go to stderr; the header and the table go to stdout.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from typing import Any


from .harness import (
    child_cell,
    csv_of,
    machine_lines,
    percentile,
    positive,
    print_header,
    print_table,
    run_child,
)
from .quiet import QuietWait, add_quiet_options, load_part, load_text, quiet_line, quiet_wait
from .workloads import PAGES, check_database, create_schema, pageview

from sqlite_gateway import Gateway

BATCH_ON = 256  # Gateway's default batch_max: group commit on
BATCH_OFF = 1  # one request per transaction: group commit off
DEFAULT_THREADS = (1, 8, 32, 64)
DEFAULT_SECONDS = 5.0
QUICK_THREADS = (1, 8, 32)
QUICK_SECONDS = 1.5
CALL_TIMEOUT = 30.0  # one caller's longest wait for one answer
JOIN_GRACE = CALL_TIMEOUT + 15.0  # past the deadline, how long to wait for callers
CHILD_GRACE = JOIN_GRACE + 45.0  # past the deadline, how long to wait for a child


# -- one cell (runs in the child process) ----------------------------------------


class Caller:
    """One client thread: runs operations until the deadline, timing each call."""

    def __init__(self, db: Gateway, seed: int, start: threading.Event,
                 deadline: list[float]) -> None:
        self.db = db
        self.rng = random.Random(seed)
        self.start = start
        self.deadline = deadline  # set by the parent thread just before `start`
        self.latencies: list[float] = []  # seconds, one per successful call
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        self.start.wait()
        deadline = self.deadline[0]
        db, rng, latencies = self.db, self.rng, self.latencies
        clock = time.perf_counter
        while clock() < deadline:  # bounded: the deadline
            page = PAGES[rng.randrange(len(PAGES))]
            began = clock()
            try:
                db.transaction(pageview, page, time.time())
            except Exception as exc:  # counted and reported; there should be none
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(clock() - began)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell on the database the parent prepared; return its figures."""
    threads, batch_max, seconds = spec["threads"], spec["batch_max"], spec["seconds"]
    db = Gateway(spec["path"], batch_max=batch_max, synchronous=spec["synchronous"],
                 timeout=CALL_TIMEOUT)
    start, deadline = threading.Event(), [0.0]
    callers = [Caller(db, seed, start, deadline) for seed in range(threads)]
    with db:
        for caller in callers:
            caller.thread.start()
        began = time.perf_counter()
        deadline[0] = began + seconds
        start.set()
        time.sleep(seconds)
        join_by = time.monotonic() + JOIN_GRACE
        for caller in callers:
            caller.thread.join(max(0.0, join_by - time.monotonic()))
        elapsed = time.perf_counter() - began
        stuck = sum(caller.thread.is_alive() for caller in callers)
        stats = db.stats()
    latencies = sorted(lat for caller in callers for lat in caller.latencies)
    errors = [err for caller in callers for err in caller.errors]
    errors += [f"caller thread still running {JOIN_GRACE:.0f} s after the deadline"] * stuck
    return {"threads": threads, "batch_max": batch_max, "seconds": elapsed,
            "ops": len(latencies), "ops_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "errors": len(errors), "error_samples": sorted(set(errors))[:5],
            "batch_mean": stats["batch_mean"], "batches": stats["batches"], "stuck": stuck}


# -- the parent: one child per cell, then the table --------------------------------


def run_one(threads: int, batch_max: int, seconds: float, synchronous: str,
            quiet: QuietWait | None = None) -> dict[str, Any]:
    """Run one cell in a fresh interpreter on a fresh database (after waiting for a
    quiet machine, with ``quiet``); check it afterwards."""
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-bench-") as tmp:
        path = os.path.join(tmp, "bench.db")
        create_schema(path)
        cell = run_child(__spec__.name, {"threads": threads, "batch_max": batch_max,
                                    "seconds": seconds, "synchronous": synchronous,
                                    "path": path}, seconds + CHILD_GRACE, quiet=quiet)
        if "child_failed" in cell:
            return {**load_part(cell), "threads": threads, "batch_max": batch_max, "ops": 0,
                    "ops_per_s": 0.0,
                    "p50_ms": 0.0, "p99_ms": 0.0, "errors": 1, "batch_mean": 0.0,
                    "correct": False,
                    "error_samples": [cell["child_failed"], *cell.get("stderr", [])]}
        cell.update(check_database(path, cell["ops"]))
    return cell


COLUMNS = ("threads", "nobatch ops/s", "nobatch p99 ms", "batch ops/s", "batch p99 ms",
           "batch mean size", "speed-up", "load nobatch", "load batch", "correct")


def table_row(off: dict[str, Any], on: dict[str, Any]) -> tuple[str, ...]:
    speedup = on["ops_per_s"] / off["ops_per_s"] if off["ops_per_s"] else 0.0
    ok = all(cell["correct"] and not cell["errors"] for cell in (off, on))
    return (str(off["threads"]), f"{off['ops_per_s']:,.0f}", f"{off['p99_ms']:.2f}",
            f"{on['ops_per_s']:,.0f}", f"{on['p99_ms']:.2f}", f"{on['batch_mean']:.1f}",
            f"{speedup:.1f}x", load_text(off), load_text(on), "ok" if ok else "FAIL")


def progress(cell: dict[str, Any]) -> None:
    mode = "batch  " if cell["batch_max"] != BATCH_OFF else "nobatch"
    line = (f"  threads={cell['threads']:<3} {mode} {cell['ops']:>7} ops "
            f"{cell['ops_per_s']:>9,.0f} ops/s  p50 {cell['p50_ms']:7.2f} ms  "
            f"p99 {cell['p99_ms']:7.2f} ms  batch mean {cell['batch_mean']:5.1f}  "
            f"errors {cell['errors']}  {'ok' if cell['correct'] else 'FAIL'}  "
            f"load {load_text(cell)}")
    print(line, file=sys.stderr, flush=True)
    for sample in cell.get("error_samples", []):
        print(f"    {sample}", file=sys.stderr, flush=True)


# -- command line -----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput and latency of small write transactions, "
                    "group commit on (batch_max=256) vs off (batch_max=1).")
    parser.add_argument("--threads", type=csv_of(int), default=None,
                        help="comma-separated caller thread counts (default 1,8,32,64)")
    parser.add_argument("--seconds", type=positive, default=None,
                        help=f"duration of each cell (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--quick", action="store_true",
                        help=f"threads {','.join(map(str, QUICK_THREADS))}, "
                             f"{QUICK_SECONDS:g} s per cell (explicit options win)")
    parser.add_argument("--synchronous", type=str.upper, choices=("FULL", "NORMAL"),
                        default="FULL", help="PRAGMA synchronous (default FULL)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    add_quiet_options(parser)
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # JSON spec, in the child
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = QUICK_THREADS if args.quick else DEFAULT_THREADS
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell:
        return child_cell(args.cell, run_cell)
    rows = []
    cells = []
    failed = False
    quiet = quiet_wait(args)
    for threads in args.threads:
        off = run_one(threads, BATCH_OFF, args.seconds, args.synchronous, quiet)
        progress(off)
        on = run_one(threads, BATCH_ON, args.seconds, args.synchronous, quiet)
        progress(on)
        failed |= any(cell["errors"] or not cell["correct"] for cell in (off, on))
        rows.append(table_row(off, on))
        cells += [off, on]
    print_header(machine_lines(f"synchronous={args.synchronous}, {args.seconds:g} s per cell, "
                               f"batch_max {BATCH_OFF} (nobatch) vs {BATCH_ON} (batch)"),
                 args.markdown)
    print()
    print(quiet_line(cells))
    print(quiet.line())
    print()
    print_table(COLUMNS, rows, args.markdown, left=0)
    if failed:
        print("FAILED: a cell had errors or a failed correctness check (see above)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
