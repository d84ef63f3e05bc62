"""A bulk job beside web traffic: how much does it raise the web p99?

Run from the repository root::

    .venv/bin/python -m benchmarks.priority             # 8 s per cell
    .venv/bin/python -m benchmarks.priority --quick     # 2 s per cell
    .venv/bin/python -m benchmarks.priority --markdown  # the table as Markdown (README)

Options: ``--seconds 8``, ``--web-threads 16``, ``--think 0.002`` (seconds
each web thread waits between calls), ``--slice 0.01`` (the gateway's
``background_slice``), ``--no-wait-quiet``, ``--quiet-below 0.9``,
``--quiet-max-wait 90`` (before each cell, wait until the 1-minute load average
is under 0.9, at most 90 s: see ``quiet.py``).

Web traffic: ``--web-threads`` threads, each a loop of page views (one
``db.transaction``: increment a hot counter, log the view), with a short
think time between calls, so the writer is busy but not saturated: the
state of a normal day. Three cells, each in a fresh child process on a fresh
database (this script with a hidden ``--cell``):

- ``web alone``: the web traffic, nothing else;
- ``+ bulk, sliced``: beside it, a job loading rows with ``db.bulk()`` at
  background priority (cut into slices of ``--slice`` seconds), as long as
  the cell runs;
- ``+ bulk, unsliced``: the same job written the naive way: ``executemany``
  of 20,000 rows per call at the default (interactive) priority.

Printed: web calls/s, web p50/p99/max (ms), bulk rows/s, the web p99
against ``web alone``, each cell's load average before -> after (BUSY when it
started at >= 1.0) and one line saying whether the run was quiet. The goal:
sliced, the bulk job raises the web p99 by less than 2x. Each child checks
afterwards that every counter equals its logged views and that the bulk rows
are all there; exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import apsw


from .harness import (
    child_env,
    machine_lines,
    non_negative,
    percentile,
    positive,
    print_header,
    print_table,
    python_m,
    whole,
)
from .quiet import add_quiet_options, cell_load, load_text, quiet_line, quiet_wait

from sqlite_gateway import Gateway

CELLS = ("web alone", "+ bulk, sliced", "+ bulk, unsliced")
PAGES = 10
BULK_ROWS = 20_000  # rows per bulk()/executemany call: the job loops until the cell ends
CALL_TIMEOUT = 30.0


def view(conn: Any, page: int) -> None:
    conn.execute("UPDATE pages SET views = views + 1 WHERE id = ?", (page,))
    conn.execute("INSERT INTO views(page, at) VALUES (?, ?)", (page, time.time()))


def run_cell(cell: str, seconds: float, web_threads: int, think: float,
             slice_: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        with Gateway(path, background_slice=slice_) as db:
            db.execute("CREATE TABLE pages(id INTEGER PRIMARY KEY, views INTEGER NOT NULL);"
                       "CREATE TABLE views(id INTEGER PRIMARY KEY, page INTEGER, at REAL);"
                       "CREATE TABLE facts(id INTEGER PRIMARY KEY, a INTEGER, b TEXT)")
            db.executemany("INSERT INTO pages(id, views) VALUES (?, 0)",
                           [(i,) for i in range(PAGES)])
            stop = threading.Event()
            latencies: list[list[float]] = [[] for _ in range(web_threads)]
            bulk_rows = [0]

            def web(mine: list[float]) -> None:
                rng = random.Random()
                while not stop.is_set():
                    began = time.perf_counter()
                    db.transaction(view, rng.randrange(PAGES), timeout=CALL_TIMEOUT)
                    mine.append(time.perf_counter() - began)
                    stop.wait(think * rng.uniform(0.5, 1.5))

            def job() -> None:
                rows = [(i, f"row {i}") for i in range(BULK_ROWS)]
                while not stop.is_set():
                    if cell == "+ bulk, sliced":
                        db.bulk("INSERT INTO facts(a, b) VALUES (?, ?)", rows,
                                timeout=CALL_TIMEOUT)
                    else:
                        db.executemany("INSERT INTO facts(a, b) VALUES (?, ?)", rows,
                                       timeout=CALL_TIMEOUT)
                    bulk_rows[0] += len(rows)

            threads = [threading.Thread(target=web, args=(mine,)) for mine in latencies]
            if cell != "web alone":
                threads.append(threading.Thread(target=job))
            began = time.monotonic()
            for thread in threads:
                thread.start()
            stop.wait(seconds)
            stop.set()
            for thread in threads:
                thread.join(CALL_TIMEOUT * 2)
            elapsed = time.monotonic() - began
            stats = db.stats()
        conn = apsw.Connection(path)
        counted = conn.execute("SELECT sum(views) FROM pages").fetchall()[0][0]
        logged = conn.execute("SELECT count(*) FROM views").fetchall()[0][0]
        facts = conn.execute("SELECT count(*) FROM facts").fetchall()[0][0]
        conn.close()
    web_lat = sorted(x for mine in latencies for x in mine)
    return {
        "cell": cell, "web_calls": len(web_lat), "web_per_s": len(web_lat) / elapsed,
        "p50_ms": percentile(web_lat, 0.50) * 1000, "p99_ms": percentile(web_lat, 0.99) * 1000,
        "max_ms": (web_lat[-1] if web_lat else 0.0) * 1000,
        "bulk_rows_per_s": bulk_rows[0] / elapsed, "commits": stats["commits"],
        "ok": counted == logged == len(web_lat) and facts == bulk_rows[0],
        "check": f"views {counted}/{logged}/{len(web_lat)}, facts {facts}/{bulk_rows[0]}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=positive, default=8.0)
    parser.add_argument("--quick", action="store_true", help="2 s per cell")
    parser.add_argument("--web-threads", type=whole, default=16)
    parser.add_argument("--think", type=non_negative, default=0.002)
    parser.add_argument("--slice", type=positive, default=0.01)
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 2.0
    settings = (args.seconds, args.web_threads, args.think, args.slice)
    if args.cell:
        print(json.dumps(run_cell(args.cell, *settings)))
        return 0
    print_header(machine_lines(f"{args.web_threads} web threads, think "
                               f"{args.think * 1000:g} ms, slice {args.slice * 1000:g} ms, "
                               f"{args.seconds:g} s per cell"), args.markdown)
    print()
    results = []
    quiet = quiet_wait(args)
    for cell in CELLS:
        with cell_load(quiet) as load:  # waits for a quiet machine first
            out = subprocess.run(
                python_m(__spec__.name, "--cell", cell,
                         "--seconds", str(args.seconds), "--web-threads", str(args.web_threads),
                         "--think", str(args.think), "--slice", str(args.slice)),
                env=child_env(), capture_output=True, text=True,
                timeout=args.seconds * 4 + 120, check=False)
        if out.returncode:
            print(f"cell {cell!r} failed:\n{out.stderr}", file=sys.stderr)
            return 1
        results.append({**json.loads(out.stdout.strip().splitlines()[-1]), **load})
        print(f"  ran {cell}: p99 {results[-1]['p99_ms']:.1f} ms, load {load_text(load)}",
              file=sys.stderr)
    print(quiet_line(results))
    print(quiet.line())
    print()
    base = results[0]["p99_ms"] or 1e-9
    head = ("cell", "web calls/s", "web p50 ms", "web p99 ms", "web max ms", "bulk rows/s",
            "p99 vs alone", "load", "checks")
    rows = [(r["cell"], f"{r['web_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
             f"{r['max_ms']:.1f}", f"{r['bulk_rows_per_s']:,.0f}", f"{r['p99_ms'] / base:.2f}x",
             load_text(r), "ok" if r["ok"] else "FAIL " + r["check"]) for r in results]
    print_table(head, rows, args.markdown)
    ratio = results[1]["p99_ms"] / base
    print(f"goal: sliced bulk job raises the web p99 by less than 2x: "
          f"{'PASS' if ratio < 2 else 'MISS'} ({ratio:.2f}x)")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
