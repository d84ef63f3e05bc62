"""Several processes, each with its own Gateway on one file: what pre-forking costs.

A pre-forking server (gunicorn, uWSGI) runs the app in several worker
processes; each then has its own gateway, and their writers take turns on
SQLite's file lock (waiting in SQLite's busy handler, up to the busy timeout).
This runs 1, 2 and 4 processes with the same total number of threads (32 by
default, split evenly), each thread running the page-view transaction (INSERT
INTO views, UPDATE pages SET views = views + 1; 10 hot pages) through its
process's gateway, at ``synchronous=FULL``. The single process is the
reference: the same threads, one writer, no lock hand-over between processes.

All processes start together (a shared start time) and stop together. The
parent checks the file after they have all exited: views rows ==
sum(pages.views) == the views the children counted.

Each row runs ``--repeat`` times (3), round-robin over the rows, and the run
of median views/s is shown; ``--process-lock off,on`` runs every row without
and with the Gateway's ``process_lock`` option. The 1-minute load average is
recorded before and after each run (BUSY: >= 1.0 as it started), and each run
first waits until it is under 0.9 (at most 90 s; ``--no-wait-quiet`` to skip,
``--quiet-below``, ``--quiet-max-wait``: see ``quiet.py``). Goal lines
(PASS/MISS): the most processes >= 0.9x the views/s of 1, p99 <= 2x, 0 errors,
exact counts.

Run: ``python -m benchmarks.multiprocess`` (about 2 min; ``--quick``: 1 run of 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from typing import Any

# The same page-view schema, fn and check as the asyncio comparison.
from .asyncio_compare import HOT_PAGES, check, page, pageview, prepare
from .harness import child_env, machine_lines, percentile, print_header, print_table, python_m
from .quiet import QuietWait, add_quiet_options, cell_load, quiet_line, quiet_wait


def child(cell: dict[str, Any]) -> dict[str, Any]:
    """One worker process: its own Gateway, ``threads`` threads, from start to end."""
    import apsw

    from sqlite_gateway import Gateway
    threads, start_at, seconds = cell["threads"], cell["start_at"], cell["seconds"]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    done = [0] * threads
    busy = [0] * threads
    other: dict[str, int] = {}
    with Gateway(cell["path"], synchronous=cell["synchronous"],
                 busy_timeout=cell["busy_timeout"], process_lock=cell["process_lock"]) as db:
        deadline = start_at + seconds

        def run(t: int) -> None:
            i = t + cell["index"] * threads
            while time.time() < deadline:
                begin = time.perf_counter()
                try:
                    db.transaction(pageview, page(i), time.time())
                except apsw.BusyError:
                    busy[t] += 1
                except Exception as exc:
                    other[type(exc).__name__] = other.get(type(exc).__name__, 0) + 1
                else:
                    done[t] += 1
                    if time.time() <= deadline:
                        latencies[t].append(time.perf_counter() - begin)
                i += 1

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        time.sleep(max(0.0, start_at - time.time()))
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stats = db.stats()
    return {"latencies": [x for lat in latencies for x in lat], "done": sum(done),
            "busy": sum(busy), "other": other, "batch_mean": stats["batch_mean"],
            "commits": stats["commits"]}


def measure(processes: int, threads: int, seconds: float, synchronous: str,
            busy_timeout: float, process_lock: bool,
            quiet: QuietWait | None = None) -> dict[str, Any]:
    with cell_load(quiet) as load:  # waits for a quiet machine first, with quiet
        result = _measure(processes, threads, seconds, synchronous, busy_timeout,
                          process_lock)
    # ("busy" here counts BusyErrors: the machine's state is "busy_load".)
    result.update(load_before=load["load_before"], load_after=load["load_after"],
                  busy_load=load["busy"], waited_s=load.get("waited_s", 0.0))
    return result


def _measure(processes: int, threads: int, seconds: float, synchronous: str,
             busy_timeout: float, process_lock: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="multiprocess-") as tmp:
        path = os.path.join(tmp, "bench.db")
        prepare(path)
        start_at = time.time() + 1.0 + 0.2 * processes  # time for every child to open
        children = []
        for index in range(processes):
            cell = {"path": path, "threads": threads // processes, "start_at": start_at,
                    "seconds": seconds, "synchronous": synchronous, "index": index,
                    "busy_timeout": busy_timeout, "process_lock": process_lock}
            children.append(subprocess.Popen(
                python_m(__spec__.name, "--child", json.dumps(cell)), env=child_env(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = []
        for proc in children:
            out, err = proc.communicate(timeout=seconds * 10 + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"a child failed:\n{err}")
            outputs.append(json.loads(out.splitlines()[-1]))
        done = sum(o["done"] for o in outputs)
        correct = check(path, done, reads=False)
    lat = sorted(x for o in outputs for x in o["latencies"])
    other: dict[str, int] = {}
    for o in outputs:
        for name, count in o["other"].items():
            other[name] = other.get(name, 0) + count
    return {"processes": processes, "threads": threads // processes, "process_lock": process_lock,
            "ops_s": len(lat) / seconds, "p50_ms": percentile(lat, 0.5) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3, "busy": sum(o["busy"] for o in outputs),
            "other": other, "correct": correct,
            "batch_mean": sum(o["batch_mean"] * o["commits"] for o in outputs)
            / max(1, sum(o["commits"] for o in outputs))}


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median views/s; errors summed, correct only if every run was,
    busy if any run started on a busy machine; every run's views/s kept."""
    ordered = sorted(rows, key=lambda r: r["ops_s"])
    mid = ordered[(len(ordered) - 1) // 2]
    other: dict[str, int] = {}
    for r in rows:
        for name, count in r["other"].items():
            other[name] = other.get(name, 0) + count
    return {**mid, "runs": [r["ops_s"] for r in rows], "busy": sum(r["busy"] for r in rows),
            "other": other,
            "correct": all(r["correct"] for r in rows),
            "busy_load": any(r["busy_load"] for r in rows),
            "load_before": max(r["load_before"] for r in rows),
            "load_after": max(r["load_after"] for r in rows),
            "waited_s": sum(r["waited_s"] for r in rows)}


GOAL_SHARE = 0.9  # 4 processes' views/s over 1 process's
GOAL_P99 = 2.0  # 4 processes' p99 over 1 process's, at most


def goal_lines(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """PASS/MISS for the several-process goals, per lock mode, from one run."""
    out = []
    for mode in sorted({r["process_lock"] for r in results}, reverse=True):
        rows = {r["processes"]: r for r in results if r["process_lock"] == mode}
        one, many = rows.get(1), rows.get(max(rows))
        label = f"process_lock={mode}"
        if one is None or many is None or many is one:
            continue
        share = many["ops_s"] / one["ops_s"] if one["ops_s"] else 0.0
        p99 = many["p99_ms"] / one["p99_ms"] if one["p99_ms"] else float("inf")
        errors = many["busy"] + sum(many["other"].values())
        n = many["processes"]
        out.append(("PASS" if share >= GOAL_SHARE else "MISS",
                    f"{label}: {n} processes / 1 process = {share:.2f}x views/s "
                    f"(goal >= {GOAL_SHARE:g}x; {many['ops_s']:,.0f} vs {one['ops_s']:,.0f})"))
        out.append(("PASS" if p99 <= GOAL_P99 else "MISS",
                    f"{label}: {n} processes p99 / 1 process p99 = {p99:.2f}x (goal <= "
                    f"{GOAL_P99:g}x; {many['p99_ms']:.1f} vs {one['p99_ms']:.1f} ms)"))
        out.append(("PASS" if errors == 0 and many["correct"] else "MISS",
                    f"{label}: {n} processes: {errors} errors, counts "
                    f"{'exact' if many['correct'] else 'WRONG'} (goal 0, exact)"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--threads", type=int, default=32, help="in total, split evenly")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--busy-timeout", type=float, default=5.0,
                        help="each gateway's busy timeout (the Gateway default)")
    parser.add_argument("--process-lock", default="off,on",
                        help="the Gateway's process_lock option: off, on, or off,on (both)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each row, round-robin over every row; the median "
                             "views/s is kept (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 s per row, 1 run")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.quick:
        args.seconds, args.repeat = 2.0, 1
    counts = [int(x) for x in args.processes.split(",")]
    modes = [{"on": True, "off": False}[x.strip()] for x in args.process_lock.split(",")]
    began = time.monotonic()
    # Round-robin, so that a change in the machine's load hits every row alike.
    runs: dict[tuple[bool, int], list[dict[str, Any]]] = {}
    quiet = quiet_wait(args)
    for _ in range(max(1, args.repeat)):
        for mode in modes:
            for p in counts:
                runs.setdefault((mode, p), []).append(
                    measure(p, args.threads, args.seconds, args.synchronous,
                            args.busy_timeout, mode, quiet))
    results = [median_row(rows) for rows in runs.values()]
    print_header(machine_lines(
        f"page view = transaction(INSERT view, UPDATE pages), {HOT_PAGES} hot pages, WAL, "
        f"synchronous={args.synchronous}, {args.threads} threads in all, busy timeout "
        f"{args.busy_timeout:g} s, {args.seconds:g} s per row"), args.markdown)
    print()
    print(quiet_line([{"load_before": r["load_before"], "load_after": r["load_after"],
                       "busy": r["busy_load"]} for r in results]))
    print(quiet.line())
    print()
    rows = []
    for r in results:
        base = next((b["ops_s"] for b in results
                     if b["processes"] == 1 and b["process_lock"] == r["process_lock"]), 0.0)
        rows.append([
            "on" if r["process_lock"] else "off", str(r["processes"]), str(r["threads"]),
            f"{r['ops_s']:,.0f}", f"{r['ops_s'] / base:.2f}x" if base else "-",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["busy"]),
            str(sum(r["other"].values())), f"{r['batch_mean']:.1f}",
            "/".join(f"{x:,.0f}" for x in r["runs"]), "yes" if r["correct"] else "NO",
            f"{r['load_before']:.2f}->{r['load_after']:.2f}" + (" BUSY" if r["busy_load"] else "")
            + (f" (waited {r['waited_s']:.0f} s)" if r["waited_s"] >= 1 else "")])
    print_table(["process_lock", "processes", "threads each", "views/s", "vs 1 process",
                 "p50 ms", "p99 ms", "busy errors", "other errors", "batch", "runs views/s",
                 "correct", "load"],
                rows, args.markdown, left=2)
    for r in results:
        for name, count in r["other"].items():
            print(f"  {r['processes']} processes: {count} x {name}")
    print()
    for verdict, text in goal_lines(results):
        print(f"{'- ' if args.markdown else ''}{verdict}  {text}")
    print(f"total time: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
