"""The page-view transaction through SQLAlchemy's ORM and peewee: stock sqlite3 vs the gateway.

Run from the checkout: ``python -m benchmarks.orm_pageview`` (threads 1,8,32,
3 s per cell, 3 runs of each cell round-robin, the median run shown),
``--quick`` (1 s, one run) or ``--smoke`` (1 and 4 threads, 0.5 s, one run).

What one operation is, and the ways (``stock``, ``gateway``, ``gateway-fn``,
``stock-read``, ``gateway-read``): see ``orm_ways.py``. Every cell (ORM x way x
thread count) runs in a fresh child process on a fresh database that the parent
creates with apsw and checks afterwards, read-only: the counters sum to the
log rows, and the log holds one row per write answered as done. The child of a
stock way never opens the file with apsw, and the child of a gateway way never
opens it with ``sqlite3``.

Per cell: ops/s (operations completed inside the window), p50/p99 over every
successful operation, errors (every failed operation), "database is locked"
among them, starved threads (completed < 10 % of the mean per thread), the
process's CPU time per operation, and the 1-minute load average before and
after the cell (BUSY when it started at >= 1.0; one line says whether the run
was quiet). Each cell first waits until that load is under 0.9 (at most 90 s;
``--no-wait-quiet``, ``--quiet-below``, ``--quiet-max-wait``: see ``quiet.py``).
Goal lines at the most
threads, per ORM: gateway-fn >= 2x stock; gateway >= 1x stock with p99 <= 1/2
of stock's; 0 "database is locked" and 0 starved threads on the gateway's ways
(stock's shown as info); reads through the gateway >= 0.9x stock.
The script exits 1 if a cell fails its check or its child crashes; a missed
goal is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

from .harness import (Progress, child_cell, csv_of, machine_lines, positive, print_header,
                      print_table, ratio, run_child, starved, whole)
from .quiet import QuietWait, add_quiet_options, load_of_runs, load_text, quiet_line, quiet_wait
from .orm_ways import ORMS, READ_WAYS, WRITE_WAYS

Cells = dict[tuple[str, str, int], dict[str, Any]]
CHILD_GRACE = 90.0  # past the cell's window, how long to wait for its child
READ_THREADS = (1, 32)


def cell_main(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: one ORM, one way, one thread count."""
    from .orm_ways import make_way
    from .workloads import run_cell

    way = make_way(spec["orm"], spec["way"], spec["path"], spec["threads"], spec.get("readers"))
    workload = "point-read" if spec["way"] in READ_WAYS else "pageview-fn"
    cpu = time.process_time()
    cell = run_cell(way, workload, spec["threads"], spec["seconds"], join_grace=45.0)
    # the whole process's CPU (every thread, the ORM's Python and SQLite's C) per operation
    cell["cpu_ms_per_op"] = (time.process_time() - cpu) * 1000 / max(1, cell["ops"])
    cell["starved"] = starved(cell.pop("thread_ops"))
    return cell


def run_one(spec: dict[str, Any], temp: str, progress: Progress,
            quiet: QuietWait | None = None) -> dict[str, Any]:
    """One cell in a fresh interpreter on a fresh database (after a quiet wait, with
    ``quiet``), checked afterwards."""
    from .workloads import check_database, create_schema

    label = f"{spec['orm']} {spec['way']} x{spec['threads']}"
    progress.begin(label)
    path = os.path.join(temp, f"{spec['orm']}-{spec['way']}-{spec['threads']}-{spec['rep']}.db")
    create_schema(path)
    cell = run_child(__spec__.name, {**spec, "path": path}, spec["seconds"] + CHILD_GRACE,
                     progress.tick, quiet)
    if "child_failed" in cell:
        cell.update(ops_per_s=0.0, p50_ms=0.0, p99_ms=0.0, errors=1, locked=0, cpu_ms_per_op=0.0,
                    starved=spec["threads"], correct=False)
    else:
        cell["correct"] = check_database(path, cell["writes"])["correct"]
    for suffix in ("", "-wal", "-shm"):  # a full run makes many files: keep the disk small
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    progress.end(f"{label}: {cell['ops_per_s']:,.0f} ops/s, p99 {cell['p99_ms']:.2f} ms, "
                 f"errors {cell['errors']}, {'ok' if cell['correct'] else 'FAIL'}, "
                 f"load {load_text(cell)}")
    return cell


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median ops/s, with every run's ops/s; errors, locked and starved
    summed over the runs; correct only if every run was."""
    failed = [c for c in runs if "child_failed" in c]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda c: c["ops_per_s"])
    cell = dict(ordered[(len(ordered) - 1) // 2])
    cell["runs"] = [c["ops_per_s"] for c in runs]
    for key in ("errors", "locked", "starved"):
        cell[key] = sum(c[key] for c in runs)
    cell["correct"] = all(c["correct"] for c in runs)
    cell.update(load_of_runs(runs))
    return cell


def plan(orms: tuple[str, ...], threads: tuple[int, ...], read_threads: tuple[int, ...],
         kinds: tuple[str, ...] = ("writes", "reads")) -> list[tuple[str, str, int]]:
    """(orm, way, threads) of every cell, writes then reads."""
    return ([(orm, way, n) for orm in orms for n in threads for way in WRITE_WAYS
             if "writes" in kinds]
            + [(orm, way, n) for orm in orms for n in read_threads for way in READ_WAYS
               if "reads" in kinds])


def goal_lines(cells: Cells, orm: str, writes_at: int, reads_at: int) -> list[tuple[str, str]]:
    """(PASS/MISS/info, text) for one ORM; every ratio from cells of this one run."""
    where = f"{orm} x{writes_at}"
    stock, plain, fn = (cells.get((orm, way, writes_at)) for way in WRITE_WAYS)
    out: list[tuple[str, str]] = []
    if not (stock or plain or fn):
        pass  # no write cells in this run (--cells reads)
    elif not (stock and plain and fn) or any("child_failed" in c for c in (stock, plain, fn)):
        out.append(("MISS", f"{where}: a write cell failed, no ratios"))
    else:
        r_fn = ratio(fn["ops_per_s"], stock["ops_per_s"])
        out.append(("PASS" if r_fn >= 2 else "MISS",
                    f"{where}: (c) gateway-fn / (a) stock = {r_fn:.2f}x (goal >= 2x; "
                    f"{fn['ops_per_s']:,.0f} vs {stock['ops_per_s']:,.0f} ops/s)"))
        r_plain = ratio(plain["ops_per_s"], stock["ops_per_s"])
        r_p99 = ratio(plain["p99_ms"], stock["p99_ms"])
        out.append(("PASS" if r_plain >= 1 and r_p99 <= 0.5 else "MISS",
                    f"{where}: (b) gateway / (a) stock = {r_plain:.2f}x, p99 "
                    f"{plain['p99_ms']:.1f} vs {stock['p99_ms']:.1f} ms = {r_p99:.2f}x "
                    "(goal >= 1x, p99 <= 0.5x)"))
        for way, cell in zip(WRITE_WAYS, (stock, plain, fn), strict=True):
            bad = cell["locked"] or cell["starved"] or not cell["correct"]
            out.append(("info" if way == "stock" else "MISS" if bad else "PASS",
                        f"{where}: {way}: {cell['locked']} 'database is locked', "
                        f"{cell['starved']} starved threads, file check "
                        f"{'ok' if cell['correct'] else 'FAILED'} (goal 0, 0, ok)"))
    s_read, g_read = (cells.get((orm, way, reads_at)) for way in READ_WAYS)
    if not (s_read or g_read):
        pass  # no read cells in this run (--cells writes)
    elif not (s_read and g_read) or "child_failed" in s_read or "child_failed" in g_read:
        out.append(("MISS", f"{orm} x{reads_at}: a read cell failed, no ratio"))
    else:
        r_read = ratio(g_read["ops_per_s"], s_read["ops_per_s"])
        out.append(("PASS" if r_read >= 0.9 else "MISS",
                    f"{orm} x{reads_at}: ORM point reads gateway / stock = {r_read:.2f}x "
                    f"(goal >= 0.9x; {g_read['ops_per_s']:,.0f} vs "
                    f"{s_read['ops_per_s']:,.0f} ops/s)"))
    return out


def table_rows(cells: Cells) -> list[tuple[object, ...]]:
    ways = (*WRITE_WAYS, *READ_WAYS)
    rows: list[tuple[object, ...]] = []
    for (orm, way, n), cell in sorted(cells.items(), key=lambda kv: (
            ORMS.index(kv[0][0]), kv[0][1] in READ_WAYS, kv[0][2], ways.index(kv[0][1]))):
        if "child_failed" in cell:
            rows.append((orm, way, n, "failed: " + cell["child_failed"], *("",) * 9))
            continue
        rows.append((orm, way, n, f"{cell['ops_per_s']:,.0f}",
                     "/".join(f"{x:,.0f}" for x in cell.get("runs", [cell["ops_per_s"]])),
                     f"{cell['p50_ms']:.2f}", f"{cell['p99_ms']:.2f}", cell["errors"],
                     cell["locked"], cell["starved"], f"{cell['cpu_ms_per_op']:.2f}",
                     load_text(cell),
                     "ok" if cell["correct"] else "FAIL"))
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orms", type=csv_of(str, ORMS), default=ORMS)
    parser.add_argument("--threads", type=csv_of(int), default=(1, 8, 32),
                        help="write cells' thread counts (default 1,8,32)")
    parser.add_argument("--read-threads", type=csv_of(int), default=READ_THREADS,
                        help="read cells' thread counts (default 1,32)")
    parser.add_argument("--cells", type=csv_of(str, ("writes", "reads")),
                        default=("writes", "reads"), help="writes, reads or both (default)")
    parser.add_argument("--readers", type=whole, default=None,
                        help="the gateway's readers (default: its default, 8)")
    parser.add_argument("--seconds", type=positive, default=3.0)
    parser.add_argument("--repeat", type=whole, default=3,
                        help="runs of each cell, round-robin; the median run is shown")
    parser.add_argument("--quick", action="store_true", help="1 s per cell, one run")
    parser.add_argument("--smoke", action="store_true",
                        help="1 and 4 threads, 0.5 s per cell, one run")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # JSON spec, in the child
    args = parser.parse_args(argv)
    if args.smoke:
        args.threads, args.read_threads, args.seconds, args.repeat = (1, 4), (1, 4), 0.5, 1
    elif args.quick:
        args.seconds, args.repeat = 1.0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell:
        return child_cell(args.cell, cell_main)
    keys = plan(args.orms, args.threads, args.read_threads, args.cells)
    load_before = os.getloadavg()[0]
    quiet = quiet_wait(args)
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    progress = Progress(len(keys) * args.repeat)
    try:
        with tempfile.TemporaryDirectory(prefix="orm-pageview-") as temp:
            for rep in range(args.repeat):  # round-robin: load changes hit every way alike
                for orm, way, n in keys:
                    spec = {"orm": orm, "way": way, "threads": n, "seconds": args.seconds,
                            "rep": rep, "readers": args.readers}
                    runs.setdefault((orm, way, n), []).append(run_one(spec, temp, progress,
                                                                           quiet))
    finally:
        progress.close()
    cells = {key: median_run(cell_runs) for key, cell_runs in runs.items()}
    print_header(machine_lines(
        f"synchronous=FULL, busy timeout 5 s, WAL; {args.seconds:g} s per cell, "
        f"{args.repeat} run(s) per cell (round-robin; the median run shown); gateway "
        f"readers: {args.readers or 'default (8)'}",
        **_versions(args.orms), **{"load average before": f"{load_before:.2f}"}),
        args.markdown)
    print()
    print(quiet_line(list(cells.values())))
    print(quiet.line())
    print()
    print_table(("orm", "way", "threads", "ops/s", "runs", "p50 ms", "p99 ms", "errors",
                 "locked", "starved", "CPU ms/op", "load before -> after", "check"),
                table_rows(cells), args.markdown, left=3)
    for (orm, way, n), cell in cells.items():  # what failed, in the ORM's own words
        for sample in cell.get("error_samples", [])[:2] if cell["errors"] else []:
            print(f"  {orm} {way} x{n}: {sample[:160]}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}; "
          "errors, locked and starved are summed over the runs; starved: threads that "
          "completed < 10 % of the mean per thread\n")
    misses = 0
    for orm in args.orms:
        for verdict, text in goal_lines(cells, orm, max(args.threads), max(args.read_threads)):
            misses += verdict == "MISS"
            print(f"{'- ' if args.markdown else ''}{verdict}  {text}")
    print(f"\ngoals: {misses} missed" if misses else "\ngoals: all met")
    bad = [key for key, c in cells.items() if "child_failed" in c or not c["correct"]]
    for key in bad:
        print(f"FAILED cell: {key}: {cells[key].get('child_failed') or 'file check'} "
              f"{cells[key].get('error_samples') or cells[key].get('stderr') or ''}",
              file=sys.stderr)
    return 1 if bad else 0


def _versions(orms: tuple[str, ...]) -> dict[str, str]:
    import sqlite3  # the parent never opens a database with it: only its version is read
    from importlib.metadata import version

    found = {orm: version(orm) for orm in orms}
    found["stock sqlite3"] = f"SQLite {sqlite3.sqlite_version}"
    return found


if __name__ == "__main__":
    sys.exit(main())
