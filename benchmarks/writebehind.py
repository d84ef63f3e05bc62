"""Write-behind at the floor: a page-view log from one producer thread.

Run from the repository root::

    .venv/bin/python -m benchmarks.writebehind             # 200,000 rows per path, 3 rounds
    .venv/bin/python -m benchmarks.writebehind --quick     # 50,000 rows, 2 rounds
    .venv/bin/python -m benchmarks.writebehind --markdown  # the tables as Markdown (README)

Options: ``--rows 200000``, ``--chunk 5000``, ``--rounds 3``, ``--synchronous FULL``,
``--backpressure-rows 100000``, ``--no-wait-quiet``, ``--quiet-below 0.9``,
``--quiet-max-wait 90`` (before each path, wait until the 1-minute load average
is under 0.9, at most 90 s: see ``quiet.py``).

One producer thread writes ``INSERT INTO views(page, ts) VALUES (?, ?)``,
``--chunk`` rows at a time, then waits for the barrier (``flush()``), until
``--rows`` rows. Paths, all in this one process (so the ratios come from one
run), each on a fresh database file, one after another in each round:

- ``ceiling``: one thread, one transaction, the same INSERT on apsw;
- ``bare``: the bare write-behind loop (``floors.WriteBehindLoop``: a deque and
  one Condition, batches of 256, one COMMIT each, a sequence number for flush),
  no future per row;
- ``bare+future``: the same loop with a ``concurrent.futures.Future`` per row;
- ``submit``: ``Gateway.submit()`` then ``Gateway.flush()``;
- ``post``: ``Gateway.post(sql, params)`` (fire-and-forget, no future) then
  ``flush()``; n/a when the gateway has no ``post``.

Printed: rows/s per path (the median of the rounds, and the range), the load
average before -> after each run of the path (BUSY when one started at >= 1.0),
one line saying whether the run was quiet, and the two ratios that are its goal:
submit / bare+future and post / bare (goal >= 0.9x each).
Each path's file must hold exactly the rows written (exit status 1 otherwise).

Then back-pressure: one producer submits ``--backpressure-rows`` rows in a loop,
without a barrier, faster than the writer commits. Today's ``submit`` refuses
with ``Overloaded`` once the queue is full; with ``priority="background",
block=True`` (n/a when ``submit`` has no ``block=``) the producer waits for
room and must get 0 Overloaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


import apsw
from .floors import WriteBehindLoop
from .harness import machine_lines, print_header, print_table, ratio, whole
from .quiet import QuietWait, add_quiet_options, cell_load, load_text, quiet_line, quiet_wait
from .strategies import apsw_connection
from .workloads import INSERT_VIEW, PAGES, create_schema

from sqlite_gateway import Gateway, Overloaded

PATHS = ("ceiling", "bare", "bare+future", "submit", "post")
GOAL = 0.9  # submit / bare+future and post / bare: within 10 % of the floor


def rows_of(chunk: int) -> list[tuple[str, float]]:
    """The parameters of one chunk (built once: every path binds the same tuples)."""
    return [(PAGES[i % len(PAGES)], float(i)) for i in range(chunk)]


def produce(submit: Callable[[str, Any], object], flush: Callable[[], None], rows: int,
            chunk: int) -> float:
    """Write ``rows`` rows through ``submit``, ``chunk`` at a time, each chunk then a
    flush(); return the seconds it took."""
    params = rows_of(chunk)
    began = time.perf_counter()
    for _ in range(rows // chunk):
        for p in params:
            submit(INSERT_VIEW, p)
        flush()
    return time.perf_counter() - began


def run_path(name: str, path: str, rows: int, chunk: int, synchronous: str) -> float | None:
    """Seconds for ``rows`` rows on path ``name`` (None: not available here)."""
    if name == "ceiling":
        conn = apsw_connection(path, synchronous, 5.0)
        try:
            params = rows_of(chunk)
            began = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(rows // chunk):
                for p in params:
                    conn.execute(INSERT_VIEW, p)
            conn.execute("COMMIT")
            return time.perf_counter() - began
        finally:
            conn.close()
    if name in ("bare", "bare+future"):
        conn = apsw_connection(path, synchronous, 5.0)
        loop = WriteBehindLoop(conn, futures=name == "bare+future").start()
        try:
            return produce(loop.submit, loop.flush, rows, chunk)
        finally:
            loop.stop()
            conn.close()
    with Gateway(path, synchronous=synchronous) as db:
        if name == "submit":
            return produce(db.submit, db.flush, rows, chunk)
        post = getattr(db, "post", None)
        if post is None:
            return None
        return produce(post, db.flush, rows, chunk)


def count_rows(path: str) -> int:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT count(*) FROM views").fetchall()[0][0])
    finally:
        conn.close()


def measure(args: argparse.Namespace, quiet: QuietWait | None = None,
            ) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]], list[str]]:
    """rows/s per path and round, the load of each of those runs (:mod:`.quiet`), and
    the problems found by the checks. With ``quiet``, each run first waits for a
    quiet machine."""
    rows = args.rows // args.chunk * args.chunk
    rates: dict[str, list[float]] = {name: [] for name in PATHS}
    loads: dict[str, list[dict[str, Any]]] = {name: [] for name in PATHS}
    problems = []
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-writebehind-") as tmp:
        for round_ in range(args.rounds):
            for name in PATHS:
                path = os.path.join(tmp, f"{name}-{round_}.db")
                create_schema(path)
                with cell_load(quiet) as load:
                    seconds = run_path(name, path, rows, args.chunk, args.synchronous)
                if seconds is None:
                    continue
                loads[name].append(load)
                found = count_rows(path)
                if found != rows:
                    problems.append(f"{name}, round {round_ + 1}: {found} rows, not {rows}")
                rates[name].append(rows / seconds)
                print(f"  round {round_ + 1} {name:<12} {rows / seconds:>11,.0f} rows/s  "
                      f"load {load_text(load)}", file=sys.stderr, flush=True)
                os.remove(path)
    return rates, loads, problems


def flush_when_room(db: Gateway, limit: float = 300.0) -> None:
    """flush(), retried while the queue is full (the barrier is a request too:
    on a fail-fast gateway it is refused with Overloaded like any other)."""
    give_up = time.monotonic() + limit
    while True:  # bounded: give_up
        try:
            db.flush(timeout=limit)
            return
        except Overloaded:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.01)


def backpressure(rows: int, synchronous: str) -> list[tuple[str, ...]]:
    """One producer, ``rows`` submits in a loop, no barrier: today's fail-fast, and the
    blocking submit (n/a when ``submit`` has no ``block=``)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-backpressure-") as tmp:
        for how in ("submit()", 'submit(priority="background", block=True)'):
            path = os.path.join(tmp, "bp.db")
            create_schema(path)
            options: dict[str, Any] = {} if how == "submit()" else {
                "priority": "background", "block": True}
            refused, first, accepted = 0, None, 0
            with Gateway(path, synchronous=synchronous) as db:
                began = time.perf_counter()
                try:
                    for i in range(rows):
                        try:
                            db.submit(INSERT_VIEW, (PAGES[i % len(PAGES)], float(i)), **options)
                            accepted += 1
                        except Overloaded:
                            refused += 1
                            first = i if first is None else first
                except TypeError as exc:  # no block= keyword in this version
                    print(f"  back-pressure: n/a: {exc}", file=sys.stderr)
                    out.append((how, f"{rows:,}", "n/a", "", "", "n/a: submit() has no block="))
                    continue
                flush_when_room(db)
                seconds = time.perf_counter() - began
            found = count_rows(path)
            os.remove(path)
            out.append((how, f"{rows:,}", f"{refused:,}", "-" if first is None else f"{first:,}",
                        f"{accepted / seconds:,.0f}",
                        "ok" if found == accepted else f"FAIL: {found:,} rows stored"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=whole, default=None, help="rows per path (200000)")
    parser.add_argument("--chunk", type=whole, default=5000, help="rows between two flushes")
    parser.add_argument("--rounds", type=whole, default=None, help="rounds of every path (3)")
    parser.add_argument("--synchronous", type=str.upper, default="FULL",
                        choices=("FULL", "NORMAL", "OFF"))
    parser.add_argument("--backpressure-rows", type=whole, default=100_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 2 rounds")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    args.rows = args.rows or (50_000 if args.quick else 200_000)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if args.rows < args.chunk:
        parser.error("--rows must be at least --chunk")

    quiet = quiet_wait(args)
    rates, loads, problems = measure(args, quiet)
    bp_rows = backpressure(args.backpressure_rows, args.synchronous)
    median = {name: statistics.median(r) if r else 0.0 for name, r in rates.items()}
    print_header(machine_lines(f"one producer thread, {args.rows:,} rows per path, "
                               f"flush() every {args.chunk:,}, {args.rounds} rounds, "
                               f"synchronous={args.synchronous}"), args.markdown)
    print()
    print(quiet_line([load for runs in loads.values() for load in runs]))
    print(quiet.line())
    print()
    labels = {"ceiling": "one thread, one transaction, apsw (the ceiling)",
              "bare": "bare write-behind loop, no future per row",
              "bare+future": "bare loop, a Future per row",
              "submit": "Gateway.submit() + flush()",
              "post": "Gateway.post() + flush()"}
    floors = {"submit": "bare+future", "post": "bare", "bare+future": "bare"}
    rows = []
    for name in PATHS:
        if not rates[name]:
            rows.append((labels[name], "n/a", "", "", "", ""))
            continue
        floor = floors.get(name)
        rows.append((labels[name], f"{median[name]:,.0f}",
                     f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}",
                     f"{ratio(median[name], median[floor]):.2f}x {floor}" if floor else "-",
                     f"{ratio(median['ceiling'], median[name]):.1f}x",
                     ", ".join(load_text(load) for load in loads[name])))
    print_table(("path", "rows/s (median)", "range", "÷ its floor", "ceiling ÷ path",
                 "load per round"), rows, args.markdown)
    print()
    bullet = "- " if args.markdown else ""
    for name, floor in (("submit", "bare+future"), ("post", "bare")):
        if not rates[name]:
            print(f"{bullet}n/a  {name} / {floor}: Gateway has no {name}()")
            continue
        r = ratio(median[name], median[floor])
        print(f"{bullet}{'PASS' if r >= GOAL else 'MISS'}  {name} / {floor} = {r:.2f}x "
              f"(goal >= {GOAL:g}x)")
    print()
    print_table(("producer loop, no barrier", "rows offered", "Overloaded", "first refused at",
                 "accepted rows/s", "stored = accepted"), bp_rows, args.markdown)
    problems += [f"back-pressure {r[0]}: {r[-1]}" for r in bp_rows if r[-1].startswith("FAIL")]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
