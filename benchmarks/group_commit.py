"""Group commit on vs off: throughput and latency of small write transactions.

Run from the repository root::

    .venv/bin/python benchmarks/group_commit.py            # threads 1,8,32,64, 5 s per cell
    .venv/bin/python benchmarks/group_commit.py --quick    # threads 1,8,32, 1.5 s per cell
    .venv/bin/python benchmarks/group_commit.py --markdown # the table as Markdown (README)

Options: ``--threads 1,8,32,64``, ``--seconds 5``, ``--synchronous FULL|NORMAL``.

Each operation is one ``db.transaction(fn)``: fn inserts a row into ``log``
and increments one of 10 hot rows of ``counters`` (chosen at random per op).
N caller threads run operations back to back until a deadline, once with
group commit on (``batch_max=256``, the default) and once with it off
(``batch_max=1``: one COMMIT, hence one fsync, per operation).

Every cell (thread count x mode) runs in a fresh child process (this script
with a hidden ``--cell`` argument; it prints one JSON line) on a fresh database
in a temporary directory, so nothing leaks from one cell into the next. The
databases live under ``tempfile.gettempdir()``: set ``TMPDIR`` to measure
another disk; the fsync cost of that disk is what group commit amortises.

After its run each child checks, on its own connection, that
``sum(counters.n) == count(*) FROM log`` and that ``log`` holds exactly one
row per successful operation. The script exits 1 if any cell had an error or
failed that check. Progress lines (with p50 latencies) go to stderr; the
header and the table go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import apsw

# Run as a script from a checkout: make the library importable without installing it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from figures import percentile  # noqa: E402
from sqlite_gateway import Gateway  # noqa: E402

BATCH_ON = 256  # Gateway's default batch_max: group commit on
BATCH_OFF = 1  # one request per transaction: group commit off
PAGES = 10  # hot counter rows
DEFAULT_THREADS = (1, 8, 32, 64)
DEFAULT_SECONDS = 5.0
QUICK_THREADS = (1, 8, 32)
QUICK_SECONDS = 1.5
CALL_TIMEOUT = 30.0  # one caller's longest wait for one answer
JOIN_GRACE = CALL_TIMEOUT + 15.0  # past the deadline, how long to wait for callers
CHILD_GRACE = JOIN_GRACE + 45.0  # past the deadline, how long to wait for a child

SCHEMA = """
CREATE TABLE log(id INTEGER PRIMARY KEY, page INTEGER, at REAL);
CREATE TABLE counters(page INTEGER PRIMARY KEY, n INTEGER NOT NULL);
"""


# -- one cell (runs in the child process) ----------------------------------------


def create_schema(path: str) -> None:
    conn = apsw.Connection(path)
    try:
        with conn:
            conn.execute(SCHEMA)
            conn.executemany("INSERT INTO counters(page, n) VALUES (?, 0)",
                             [(page,) for page in range(PAGES)])
    finally:
        conn.close()


def bump(conn: Any, page: int) -> None:
    """The transaction fn: log the hit, count it on its page."""
    conn.execute("INSERT INTO log(page, at) VALUES (?, ?)", (page, time.time()))
    conn.execute("UPDATE counters SET n = n + 1 WHERE page = ?", (page,))


def check_database(path: str, ops: int) -> dict[str, Any]:
    conn = apsw.Connection(path)
    try:
        log_rows = conn.execute("SELECT count(*) FROM log").fetchall()[0][0]
        counter_sum = conn.execute("SELECT sum(n) FROM counters").fetchall()[0][0]
    finally:
        conn.close()
    return {"log_rows": log_rows, "counter_sum": counter_sum,
            "correct": counter_sum == log_rows == ops}


class Caller:
    """One client thread: runs operations until stopped, timing each call."""

    def __init__(self, db: Gateway, seed: int, start: threading.Event,
                 stop: threading.Event, deadline: list[float]) -> None:
        self.db = db
        self.rng = random.Random(seed)
        self.start = start
        self.stop = stop
        self.deadline = deadline  # set by the parent thread just before `start`
        self.latencies: list[float] = []  # seconds, one per successful call
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        self.start.wait()
        deadline = self.deadline[0]
        db, rng, latencies = self.db, self.rng, self.latencies
        clock = time.perf_counter
        while not self.stop.is_set() and time.monotonic() < deadline:
            page = rng.randrange(PAGES)
            began = clock()
            try:
                db.transaction(bump, page)
            except Exception as exc:  # counted and reported; there should be none
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(clock() - began)


def run_cell(threads: int, batch_max: int, seconds: float, synchronous: str) -> dict[str, Any]:
    """Run one cell on a fresh database; return its figures."""
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-bench-") as tmp:
        path = os.path.join(tmp, "bench.db")
        create_schema(path)
        db = Gateway(path, batch_max=batch_max, synchronous=synchronous, timeout=CALL_TIMEOUT)
        start, stop, deadline = threading.Event(), threading.Event(), [0.0]
        callers = [Caller(db, seed, start, stop, deadline) for seed in range(threads)]
        with db:
            for caller in callers:
                caller.thread.start()
            began = time.perf_counter()
            deadline[0] = time.monotonic() + seconds
            start.set()
            stop.wait(seconds)
            stop.set()
            join_by = time.monotonic() + JOIN_GRACE
            for caller in callers:
                caller.thread.join(max(0.0, join_by - time.monotonic()))
            elapsed = time.perf_counter() - began
            stuck = sum(caller.thread.is_alive() for caller in callers)
            stats = db.stats()
        latencies = sorted(lat for caller in callers for lat in caller.latencies)
        errors = [err for caller in callers for err in caller.errors]
        errors += [f"caller thread still running {JOIN_GRACE:.0f} s after the deadline"] * stuck
        ops = len(latencies)
        figures = {
            "threads": threads,
            "batch_max": batch_max,
            "seconds": elapsed,
            "ops": ops,
            "ops_per_s": ops / elapsed,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:5],
            "batch_mean": stats["batch_mean"],
            "batches": stats["batches"],
        }
        figures.update(check_database(path, ops))
    return figures


# -- the parent: one child per cell, then the table --------------------------------


def run_child(threads: int, batch_max: int, seconds: float, synchronous: str) -> dict[str, Any]:
    """Run one cell in a fresh interpreter; a crash or timeout becomes a failed cell."""
    command = [sys.executable, os.path.abspath(__file__), "--cell", f"{threads}:{batch_max}",
               "--seconds", repr(seconds), "--synchronous", synchronous]
    failed = {"threads": threads, "batch_max": batch_max, "ops": 0, "ops_per_s": 0.0,
              "p50_ms": 0.0, "p99_ms": 0.0, "errors": 1, "batch_mean": 0.0, "correct": False}
    try:
        proc = subprocess.run(command, capture_output=True, text=True,
                              timeout=seconds + CHILD_GRACE)
    except subprocess.TimeoutExpired:
        return {**failed, "error_samples": [f"child timed out after {seconds + CHILD_GRACE:.0f} s"]}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {**failed, "error_samples": [f"child exited {proc.returncode}", *tail]}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def machine_lines(synchronous: str, seconds: float) -> list[tuple[str, str]]:
    return [
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("apsw", f"{apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}"),
        ("cpus", str(os.cpu_count())),
        ("platform", platform.platform()),
        ("database dir", tempfile.gettempdir()),
        ("settings", f"synchronous={synchronous}, {seconds:g} s per cell, "
                     f"batch_max {BATCH_OFF} (nobatch) vs {BATCH_ON} (batch)"),
        ("command", shlex.join(sys.orig_argv)),
    ]


COLUMNS = ("threads", "nobatch ops/s", "nobatch p99 ms", "batch ops/s", "batch p99 ms",
           "batch mean size", "speed-up", "correct")


def table_row(off: dict[str, Any], on: dict[str, Any]) -> tuple[str, ...]:
    speedup = on["ops_per_s"] / off["ops_per_s"] if off["ops_per_s"] else 0.0
    ok = all(cell["correct"] and not cell["errors"] for cell in (off, on))
    return (str(off["threads"]), f"{off['ops_per_s']:,.0f}", f"{off['p99_ms']:.2f}",
            f"{on['ops_per_s']:,.0f}", f"{on['p99_ms']:.2f}", f"{on['batch_mean']:.1f}",
            f"{speedup:.1f}x", "ok" if ok else "FAIL")


def print_report(header: list[tuple[str, str]], rows: list[tuple[str, ...]],
                 markdown: bool) -> None:
    if markdown:
        for key, value in header:
            print(f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}")
        print()
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---:" if i < len(COLUMNS) - 1 else ":---:"
                             for i in range(len(COLUMNS))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    width = max(len(key) for key, _ in header)
    for key, value in header:
        print(f"{key + ':':<{width + 1}} {value}")
    print()
    widths = [max(len(COLUMNS[i]), *(len(row[i]) for row in rows)) for i in range(len(COLUMNS))]
    print("  ".join(name.rjust(w) for name, w in zip(COLUMNS, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=False)))


def progress(cell: dict[str, Any]) -> None:
    mode = "batch  " if cell["batch_max"] != BATCH_OFF else "nobatch"
    line = (f"  threads={cell['threads']:<3} {mode} {cell['ops']:>7} ops "
            f"{cell['ops_per_s']:>9,.0f} ops/s  p50 {cell['p50_ms']:7.2f} ms  "
            f"p99 {cell['p99_ms']:7.2f} ms  batch mean {cell['batch_mean']:5.1f}  "
            f"errors {cell['errors']}  {'ok' if cell['correct'] else 'FAIL'}")
    print(line, file=sys.stderr, flush=True)
    for sample in cell.get("error_samples", []):
        print(f"    {sample}", file=sys.stderr, flush=True)


# -- command line -----------------------------------------------------------------


def thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1: {text!r}")
    return counts


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"seconds must be > 0: {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput and latency of small write transactions, "
                    "group commit on (batch_max=256) vs off (batch_max=1).")
    parser.add_argument("--threads", type=thread_counts, default=None,
                        help="comma-separated caller thread counts (default 1,8,32,64)")
    parser.add_argument("--seconds", type=positive_seconds, default=None,
                        help=f"duration of each cell (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--quick", action="store_true",
                        help=f"threads {','.join(map(str, QUICK_THREADS))}, "
                             f"{QUICK_SECONDS:g} s per cell (explicit options win)")
    parser.add_argument("--synchronous", type=str.upper, choices=("FULL", "NORMAL"),
                        default="FULL", help="PRAGMA synchronous (default FULL)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # THREADS:BATCH_MAX, in the child
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = QUICK_THREADS if args.quick else DEFAULT_THREADS
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell:
        threads, batch_max = (int(part) for part in args.cell.split(":"))
        print(json.dumps(run_cell(threads, batch_max, args.seconds, args.synchronous)))
        return 0

    rows = []
    failed = False
    for threads in args.threads:
        off = run_child(threads, BATCH_OFF, args.seconds, args.synchronous)
        progress(off)
        on = run_child(threads, BATCH_ON, args.seconds, args.synchronous)
        progress(on)
        failed |= any(cell["errors"] or not cell["correct"] for cell in (off, on))
        rows.append(table_row(off, on))
    print_report(machine_lines(args.synchronous, args.seconds), rows, args.markdown)
    if failed:
        print("FAILED: a cell had errors or a failed correctness check (see above)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
