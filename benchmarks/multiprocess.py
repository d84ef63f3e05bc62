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

Run: ``python -m benchmarks.multiprocess`` (about 30 s; ``--quick``: 10 s).
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
from .harness import child_env, percentile, print_table, python_m


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
                 busy_timeout=cell["busy_timeout"]) as db:
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
            busy_timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="multiprocess-") as tmp:
        path = os.path.join(tmp, "bench.db")
        prepare(path)
        start_at = time.time() + 1.0 + 0.2 * processes  # time for every child to open
        children = []
        for index in range(processes):
            cell = {"path": path, "threads": threads // processes, "start_at": start_at,
                    "seconds": seconds, "synchronous": synchronous, "index": index,
                    "busy_timeout": busy_timeout}
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
    return {"processes": processes, "threads": threads // processes,
            "ops_s": len(lat) / seconds, "p50_ms": percentile(lat, 0.5) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3, "busy": sum(o["busy"] for o in outputs),
            "other": other, "correct": correct,
            "batch_mean": sum(o["batch_mean"] * o["commits"] for o in outputs)
            / max(1, sum(o["commits"] for o in outputs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--threads", type=int, default=32, help="in total, split evenly")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--busy-timeout", type=float, default=5.0,
                        help="each gateway's busy timeout (the Gateway default)")
    parser.add_argument("--quick", action="store_true", help="2 s per row")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.quick:
        args.seconds = 2.0
    counts = [int(x) for x in args.processes.split(",")]
    print(f"page view = transaction(INSERT view, UPDATE pages), {HOT_PAGES} hot pages, WAL, "
          f"synchronous={args.synchronous}, {args.threads} threads in all, busy timeout "
          f"{args.busy_timeout:g} s, {args.seconds:g} s per row; {os.cpu_count()} CPUs")
    results = [measure(p, args.threads, args.seconds, args.synchronous, args.busy_timeout)
               for p in counts]
    base = results[0]["ops_s"] if results and results[0]["processes"] == 1 else 0.0
    rows = [[str(r["processes"]), str(r["threads"]), f"{r['ops_s']:,.0f}",
             f"{r['ops_s'] / base:.2f}x" if base else "-", f"{r['p50_ms']:.1f}",
             f"{r['p99_ms']:.1f}", str(r["busy"]), str(sum(r["other"].values())),
             f"{r['batch_mean']:.1f}", "yes" if r["correct"] else "NO"] for r in results]
    print_table(["processes", "threads each", "views/s", "vs 1 process", "p50 ms", "p99 ms",
                 "busy errors", "other errors", "batch", "correct"], rows, args.markdown)
    for r in results:
        for name, count in r["other"].items():
            print(f"  {r['processes']} processes: {count} x {name}")


if __name__ == "__main__":
    main()
