"""Every way to reach SQLite from many threads, in one run, beside the floors.

Run from the repository root::

    .venv/bin/python -m benchmarks.compare                    # the full sweep (about 10 min)
    .venv/bin/python -m benchmarks.compare --quick            # threads 1,8,32, 1 s per cell
    .venv/bin/python -m benchmarks.compare --goals --markdown # the goal cells, PASS/MISS

Options: ``--workload pageview-fn|pageview-trigger|mixed|point-read|all``,
``--threads 1,8,32,64``, ``--readers N`` (gateway+readers; default: the thread
count), ``--seconds 3``, ``--synchronous FULL|NORMAL``, ``--think-ms 0``,
``--strategies bare,gateway,...``, ``--repeat N`` (runs of each cell, round-robin,
the median kept; 3 with ``--goals``), ``--markdown``, ``--chart PATH`` (default
``benchmarks/compare.png``; ``--no-chart`` to skip it), ``--no-wait-quiet``,
``--quiet-below 0.9``, ``--quiet-max-wait 90`` (before each cell, wait until the
1-minute load average is under 0.9, at most 90 s: see ``quiet.py``).

The workloads are in ``workloads.py`` (``pageview-fn``, each operation a
``db.transaction(fn)`` of two statements, is the primary one), the strategies in
``strategies.py``, the floors (``bare``: the bare group-commit loop; ``naive``: a
queue.Queue and an Event per request) in ``floors.py``. A strategy that cannot
run a workload is left out of its table (peewee cannot run a transaction fn).

N caller threads run operations until a deadline; with ``--think-ms`` each
sleeps between operations for a random time (exponential, that mean, capped at
10x). Every cell (workload x strategy x thread count) runs in a fresh child
process (this script with a hidden ``--cell``) on a fresh database that the
parent creates in a temporary directory and checks afterwards with apsw.

Figures per cell: ops/s counts operations completed inside the window;
p50/p95/p99 are over every successful operation; ``starved`` counts threads
that completed no operation in the window; ``half-wait`` is the time-weighted
median of all waits, failed calls' included. Two ratios: the product (gateway
for writes, gateway+readers for reads) over that row, and that row over the
workload's floor (bare for writes, busy for mixed, direct for point reads).
The script exits 1 if a cell fails its check or its child crashes; a missed goal
(``--goals``) is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any


from .goals import GOAL_PLAN, goal_lines
from .harness import (
    Progress,
    child_cell,
    csv_of,
    machine_lines,
    non_negative,
    print_header,
    print_table,
    ratio,
    run_child,
    whole,
)
from .quiet import (QuietWait, add_quiet_options, load_of_runs, load_part, load_text, quiet_line,
                    quiet_wait)
from .strategies import JOIN_GRACE, STRATEGIES, NotAvailable, make_strategy, strategy_class
from .workloads import WORKLOADS, check_database, create_schema, run_cell

DEFAULT_THREADS = (1, 8, 32, 64)
DEFAULT_SECONDS = 3.0
QUICK_THREADS = (1, 8, 32)
QUICK_SECONDS = 1.0
CHILD_GRACE = JOIN_GRACE + 45.0  # past the deadline, how long to wait for a child
DEFAULT_CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare.png")
PRODUCT = {"pageview-fn": "gateway", "pageview-trigger": "gateway", "mixed": "gateway+readers",
           "point-read": "gateway+readers"}
FLOOR = {"pageview-fn": "bare", "pageview-trigger": "bare", "mixed": "busy",
         "point-read": "direct"}

Cells = dict[tuple[str, int], dict[str, Any]]


# -- one cell, in the child ------------------------------------------------------------


def cell_main(spec: dict[str, Any]) -> dict[str, Any]:
    name, threads = spec["strategy"], spec["threads"]
    base = {"strategy": name, "workload": spec["workload"], "threads": threads}
    vfs = None
    if spec.get("fsync_delay_ms") is not None:
        from .vfs.slow_sync import SlowSyncVFS
        vfs = SlowSyncVFS("fsync-delay", spec["fsync_delay_ms"] / 1000.0)
    strategy = make_strategy(name, spec["path"], spec["synchronous"], threads,
                             spec.get("readers"), vfs.name if vfs is not None else None)
    try:
        strategy.open()
    except NotAvailable as exc:
        return {**base, "na": str(exc)}
    cell = run_cell(strategy, spec["workload"], threads, spec["seconds"], spec["think_ms"],
                    JOIN_GRACE)
    if name == "peewee":
        import sqlite3  # the peewee child only; it never opens the file with apsw
        cell["sqlite"] = sqlite3.sqlite_version
    if vfs is not None:  # the mean cost an fsync really had (sleep may oversleep)
        cell["fsyncs"] = vfs.syncs
        cell["fsync_ms"] = 1000.0 * vfs.slept / vfs.syncs if vfs.syncs else 0.0
    return {**base, **cell}


# -- the parent: one child per cell -------------------------------------------------------


def run_one(spec: dict[str, Any], progress: Progress,
            quiet: QuietWait | None = None) -> dict[str, Any]:
    """Run one cell in a fresh interpreter on a fresh database (after waiting for a
    quiet machine, with ``quiet``); check it afterwards."""
    base = {"strategy": spec["strategy"], "workload": spec["workload"],
            "threads": spec["threads"]}
    progress.begin(f"{spec['workload']} {spec['strategy']} x{spec['threads']}")
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-compare-",
                                     dir=spec.get("directory")) as tmp:
        path = os.path.join(tmp, "bench.db")
        create_schema(path, spec["workload"])
        cell = run_child(__spec__.name, {**spec, "path": path}, spec["seconds"] + CHILD_GRACE,
                         progress.tick, quiet)
        if "child_failed" in cell:
            cell = {**base, **load_part(cell), "ops": 0, "ops_per_s": 0.0, "p50_ms": 0.0,
                    "p95_ms": 0.0,
                    "p99_ms": 0.0, "half_wait_ms": 0.0, "errors": 1, "starved": spec["threads"],
                    "correct": False,
                    "error_samples": [cell["child_failed"], *cell.get("stderr", [])]}
        elif "na" not in cell:
            cell.update(check_database(path, cell["writes"]))
    progress.end(describe(cell))
    return cell


def peewee_version() -> str:
    from importlib.metadata import version
    return version("peewee")


def runnable(name: str, workload: str) -> bool:
    return workload in strategy_class(name).workloads


def run_config(config: dict[str, Any], strategies: Sequence[str], threads: Sequence[int],
               progress: Progress, repeat: int = 1, quiet: QuietWait | None = None) -> Cells:
    """Every (strategy, thread count) cell of one configuration, ``repeat`` rounds
    (round-robin, so that a change in the machine's load hits every strategy alike);
    each cell keeps the run of median ops/s. The ceiling runs once per round. With
    ``quiet``, each cell first waits for a quiet machine."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        ceiling = None
        for count in threads:
            for name in strategies:
                if not runnable(name, config["workload"]):
                    continue
                if name == "ceiling" and ceiling is not None:
                    runs.setdefault((name, count), []).append({**ceiling, "threads": count})
                    continue
                cell = run_one({**config, "strategy": name, "threads": count}, progress,
                               quiet)
                runs.setdefault((name, count), []).append(cell)
                if name == "ceiling":
                    ceiling = cell
    return {key: median_run(cells) for key, cells in runs.items()}


def median_run(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median ops/s, correct only if every run was, with every run's ops/s."""
    if len(cells) == 1 or any("na" in c for c in cells):
        return cells[0]
    ordered = sorted(cells, key=lambda c: c["ops_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [c["ops_per_s"] for c in cells],
            "correct": all(c.get("correct") for c in cells),
            "errors": sum(c["errors"] for c in cells),
            **load_of_runs(cells)}


def cell_count(workload: str, strategies: Sequence[str], threads: Sequence[int]) -> int:
    return sum(len(threads) if name != "ceiling" else 1
               for name in strategies if runnable(name, workload))


def describe(cell: dict[str, Any]) -> str:
    head = f"{cell['workload']:<16} {cell['strategy']:<22} x{cell['threads']:<3}"
    if "na" in cell:
        return f"{head} n/a: {cell['na']}"
    text = (f"{head} {cell['ops_per_s']:>9,.0f} ops/s  p50 {cell['p50_ms']:.2f}  "
            f"p99 {cell['p99_ms']:.2f}  half-wait {cell['half_wait_ms']:.2f} ms  "
            f"errors {cell['errors']}  starved {cell['starved']}")
    if cell.get("batch_mean"):
        text += f"  batch {cell['batch_mean']:.1f}"
    if cell.get("runs"):
        text += f"  runs {'/'.join(f'{r:,.0f}' for r in cell['runs'])}"
    text += "  ok" if cell.get("correct") else "  FAIL"
    if "load_before" in cell:
        text += f"  load {load_text(cell)}"
    for sample in cell.get("error_samples", []):
        text += f"\n    {sample}"
    return text


# -- tables ------------------------------------------------------------------------------


def share(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """a's ops/s over b's, or "-" when either is missing or n/a."""
    if a is None or b is None or "na" in a or "na" in b:
        return "-"
    return f"{ratio(a['ops_per_s'], b['ops_per_s']):.2f}x"


def table(config: dict[str, Any], cells: Cells, strategies: Sequence[str],
          threads: Sequence[int]) -> tuple[list[str], list[tuple[str, ...]]]:
    product, floor = PRODUCT[config["workload"]], FLOOR[config["workload"]]
    head = ["threads", "strategy", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors", "retries",
            "starved", "half-wait ms", f"{product} ÷ row", f"row ÷ {floor}", "load",
            "correct"]
    rows = []
    for count in threads:
        mine, base = cells.get((product, count)), cells.get((floor, count))
        for name in strategies:
            cell = cells.get((name, count))
            if cell is None:
                continue
            label = "ceiling (1 thread)" if name == "ceiling" else name
            if "na" in cell:
                rows.append((str(count), label, "n/a", *("",) * (len(head) - 3)))
                continue
            rows.append((str(count), label, f"{cell['ops_per_s']:,.0f}", f"{cell['p50_ms']:.2f}",
                         f"{cell['p95_ms']:.2f}", f"{cell['p99_ms']:.2f}", str(cell["errors"]),
                         str(cell.get("retries", "-")), str(cell["starved"]),
                         f"{cell['half_wait_ms']:.2f}", share(mine, cell), share(cell, base),
                         load_text(cell), "ok" if cell.get("correct") else "FAIL"))
    return head, rows


def config_title(config: dict[str, Any]) -> str:
    readers = f", readers={config['readers']}" if config.get("readers") else ""
    return (f"{config['workload']}: synchronous={config['synchronous']}{readers}, "
            f"think {config['think_ms']:g} ms, {config['seconds']:g} s per cell")


# -- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput, latency and fairness of every way to reach SQLite "
                    "from many threads, beside the floors of the design.")
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all")
    parser.add_argument("--threads", type=csv_of(int), default=None,
                        help="comma-separated caller thread counts (default 1,8,32,64)")
    parser.add_argument("--readers", type=int, default=None,
                        help="gateway+readers' readers (default: the thread count)")
    parser.add_argument("--seconds", type=non_negative, default=None,
                        help=f"duration of each cell (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--synchronous", type=str.upper, choices=("FULL", "NORMAL"),
                        default="FULL", help="PRAGMA synchronous (default FULL)")
    parser.add_argument("--think-ms", type=non_negative, default=0.0,
                        help="mean think time between a thread's operations (default 0)")
    parser.add_argument("--strategies", type=csv_of(str, STRATEGIES), default=STRATEGIES,
                        help=f"comma-separated subset of {','.join(STRATEGIES)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"threads {','.join(map(str, QUICK_THREADS))}, {QUICK_SECONDS:g} s "
                             "per cell (explicit options win)")
    parser.add_argument("--repeat", type=whole, default=None,
                        help="runs of each cell, round-robin; the median is kept "
                             "(default 1; 3 with --goals)")
    parser.add_argument("--goals", action="store_true",
                        help="run the goal cells (goals.py); PASS/MISS per goal")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--chart", default=DEFAULT_CHART, help="PNG path (default %(default)s)")
    parser.add_argument("--no-chart", action="store_true", help="draw no chart")
    add_quiet_options(parser)
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # JSON spec, in the child
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = QUICK_THREADS if args.quick else DEFAULT_THREADS
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if not args.seconds > 0:
        parser.error("--seconds must be > 0")
    if args.readers is not None and args.readers < 1:
        parser.error("--readers must be >= 1")
    if args.repeat is None:
        args.repeat = 3 if args.goals else 1
    return args


def plan_of(args: argparse.Namespace) -> list[tuple[dict[str, Any], Sequence[str],
                                                    Sequence[int]]]:
    """(configuration, strategies, thread counts) for each table to print."""
    if args.goals:
        return [({"workload": w, "synchronous": s, "think_ms": 0.0, "seconds": args.seconds,
                  "readers": r}, names, (threads,)) for w, s, threads, r, names in GOAL_PLAN]
    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    return [({"workload": w, "synchronous": args.synchronous, "think_ms": args.think_ms,
              "seconds": args.seconds, "readers": args.readers}, args.strategies, args.threads)
            for w in workloads]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell:
        return child_cell(args.cell, cell_main)
    plan = plan_of(args)
    progress = Progress(args.repeat * sum(cell_count(c["workload"], names, counts)
                                          for c, names, counts in plan))
    results: list[tuple[dict[str, Any], Cells]] = []
    quiet = quiet_wait(args)
    began = time.monotonic()
    try:
        for config, names, counts in plan:
            results.append((config, run_config(config, names, counts, progress,
                                               args.repeat, quiet)))
    finally:
        progress.close()
    every_cell = [cell for _, cells in results for cell in cells.values()]
    all_runs = every_cell
    failed = [c for c in every_cell if "na" not in c and not c.get("correct")]

    peewee = next((c["sqlite"] for c in every_cell if "sqlite" in c), None)
    extra = {"peewee": f"{peewee_version()}, stdlib sqlite3 with SQLite {peewee}"} if peewee else {}
    settings = (f"--goals: the goal cells, {args.seconds:g} s per cell" if args.goals
                else f"threads {','.join(map(str, args.threads))}, synchronous="
                     f"{args.synchronous}, think {args.think_ms:g} ms, {args.seconds:g} s per cell")
    if args.repeat > 1:
        settings += f", {args.repeat} runs per cell (round-robin; the median run is shown)"
    print_header(machine_lines(settings, **extra), args.markdown)
    print()
    print(quiet_line(all_runs))
    print(quiet.line())
    misses = 0
    for index, ((config, cells), (_, names, counts)) in enumerate(
            zip(results, plan, strict=True)):
        print()
        head, rows = table(config, cells, names, counts)
        print_table(head, rows, args.markdown, left=2,
                    title=config_title(config) + (f", {counts[0]} threads" if args.goals else ""))
        if args.goals:
            print()
            for verdict, text in goal_lines(index, cells, counts[0]):
                misses += verdict == "MISS"
                print(f"{'- ' if args.markdown else ''}{verdict}  {text}")
    print()
    if args.goals:
        print(f"goals: {misses} missed" if misses else "goals: all met")
    elif not args.no_chart:
        from .chart import draw_chart
        problem = draw_chart(args.chart, [(config_title(c), cells) for c, cells in results],
                             args.strategies, args.threads)
        shown = os.path.relpath(args.chart)
        print(problem or f"chart: {shown if not shown.startswith('..') else args.chart}")
    print(f"total time: {time.monotonic() - began:.0f} s")
    for cell in failed:
        print(f"FAILED: {describe(cell)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
