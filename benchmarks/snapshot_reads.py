"""A web request's several reads: ``db.snapshot()`` against as many single reads,
beside each thread's own connection.

Run from the repository root::

    .venv/bin/python -m benchmarks.snapshot_reads                  # 3 and 5 reads, 1 and 32 threads
    .venv/bin/python -m benchmarks.snapshot_reads --reads 3 --threads 1 --seconds 2 --markdown

One operation is one request's reads: ``--reads`` reads alternating between the
two of ``mixed`` in ``workloads.py`` (a page's counter; the count of its
recent log rows), on a database holding 2,000 recent log rows. Every request
checks the value its last read returned. Ways:

- ``direct``: each thread's own apsw connection, each read in autocommit (the
  read floor of ``compare.py``);
- ``singles``: one ``db.execute`` per read (each read its own view);
- ``snapshot``: ``with db.snapshot() as s:``, one ``s.execute`` per read (one
  view for the request, the reader taken once).

Each cell runs in a fresh child process, ``--repeat`` times round-robin (the
median run is kept), after a wait for a quiet machine (``--no-wait-quiet``,
``--quiet-below``, ``--quiet-max-wait``: see ``quiet.py``), with the load
average recorded before and after it; compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from typing import Any

import apsw

from sqlite_gateway import Gateway

from .harness import (child_cell, csv_of, machine_lines, positive, print_header, print_table,
                      ratio, run_child, whole)
from .quiet import add_quiet_options, load_text, quiet_line, quiet_wait
from .strategies import BUSY_TIMEOUT_S, CALL_TIMEOUT, JOIN_GRACE, apsw_connection
from .workloads import PAGES, READ_COUNTER, READ_RECENT, create_schema

WAYS = ("direct", "singles", "snapshot")
LOG_ROWS = 2000


def reads_of(count: int, page: str, since: float) -> list[tuple[str, tuple[Any, ...]]]:
    """``count`` reads of ``page``: its counter, its log rows after ``since``, its counter..."""
    both = [(READ_COUNTER, (page,)), (READ_RECENT, (page, since))]
    return [both[i % 2] for i in range(count)]


def request_fn(way: str, db: Gateway | None, local: threading.local,
               path: str) -> Any:
    """One request of ``way``: ``fn(reads)`` runs them and returns the last value."""
    if way == "direct":
        def direct(reads: list[tuple[str, tuple[Any, ...]]]) -> Any:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = apsw_connection(path, "FULL", BUSY_TIMEOUT_S)
            value = None
            for sql, params in reads:
                value = conn.execute(sql, params).fetchall()[0][0]
            return value
        return direct
    assert db is not None
    if way == "singles":
        def singles(reads: list[tuple[str, tuple[Any, ...]]]) -> Any:
            value = None
            for sql, params in reads:
                value = db.execute(sql, params).scalar()
            return value
        return singles

    def snapshot(reads: list[tuple[str, tuple[Any, ...]]]) -> Any:
        value = None
        with db.snapshot() as s:
            for sql, params in reads:
                value = s.execute(sql, params).scalar()
        return value
    return snapshot


def cell_main(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: ``threads`` threads run requests of ``way`` for ``seconds``."""
    way, threads, count, path = spec["way"], spec["threads"], spec["reads"], spec["path"]
    db = None if way == "direct" else Gateway(path, readers=threads, timeout=CALL_TIMEOUT,
                                              busy_timeout=BUSY_TIMEOUT_S).start()
    local = threading.local()
    run = request_fn(way, db, local, path)
    start, done = threading.Event(), [0] * threads
    stop_at = [0.0]
    errors: list[str] = []
    ready = [threading.Event() for _ in range(threads)]

    reads = reads_of(count, PAGES[0], 0.0)
    expected = 0 if reads[-1][0] == READ_COUNTER else LOG_ROWS // len(PAGES)

    def caller(index: int) -> None:
        try:
            run(reads)  # its connection or reader, before the clock
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            ready[index].set()
        start.wait()
        clock, end, n = time.perf_counter, stop_at[0], 0
        while clock() < end:  # bounded: the deadline
            try:
                value = run(reads)
            except Exception as exc:  # counted, reported
                errors.append(f"{type(exc).__name__}: {exc}")
                break
            if value != expected:
                errors.append(f"read {value!r}, expected {expected!r}")
                break
            n += 1
        done[index] = n

    workers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for event in ready:
        event.wait(JOIN_GRACE)
    stop_at[0] = time.perf_counter() + spec["seconds"]
    start.set()
    for worker in workers:
        worker.join(spec["seconds"] + JOIN_GRACE)
    stuck = sum(worker.is_alive() for worker in workers)
    if db is not None and not stuck:
        db.close()
    return {"way": way, "threads": threads, "reads": count, "requests": sum(done),
            "per_s": sum(done) / spec["seconds"], "min_thread": min(done),
            "errors": len(errors), "error_samples": sorted(set(errors))[:3], "stuck": stuck}


def prepare(path: str) -> None:
    """The mixed schema with LOG_ROWS log rows, all recent for the whole cell (their
    time is 1, every read asks for rows after 0)."""
    create_schema(path, "mixed")
    conn = apsw.Connection(path)
    with conn:
        conn.executemany("INSERT INTO views(page, ts) VALUES (?, ?)",
                         [(PAGES[i % len(PAGES)], 1.0) for i in range(LOG_ROWS)])
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=csv_of(int), default=(3, 5))
    parser.add_argument("--threads", type=csv_of(int), default=(1, 32))
    parser.add_argument("--seconds", type=positive, default=2.0)
    parser.add_argument("--repeat", type=whole, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    if args.cell:
        return child_cell(args.cell, cell_main)
    quiet = quiet_wait(args)
    runs: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-snapshot-") as tmp:
        for _ in range(args.repeat):
            for count in args.reads:
                for threads in args.threads:
                    for way in WAYS:
                        path = os.path.join(tmp, f"{way}-{threads}-{count}.db")
                        if os.path.exists(path):
                            os.remove(path)
                        prepare(path)
                        spec = {"way": way, "threads": threads, "reads": count, "path": path,
                                "seconds": args.seconds}
                        cell = run_child(__spec__.name, spec, args.seconds + 2 * JOIN_GRACE,
                                         quiet=quiet)
                        runs.setdefault((count, threads, way), []).append(cell)
    cells = {key: sorted(found, key=lambda c: c.get("per_s", 0.0))[(len(found) - 1) // 2]
             for key, found in runs.items()}
    print_header(machine_lines(f"reads {','.join(map(str, args.reads))}, threads "
                               f"{','.join(map(str, args.threads))}, {args.seconds:g} s per "
                               f"cell, {args.repeat} runs round-robin (median)"), args.markdown)
    print()
    print(quiet_line([c for found in runs.values() for c in found]))
    print(quiet.line())
    print()
    rows, failed = [], False
    for count in args.reads:
        for threads in args.threads:
            base = cells[(count, threads, "direct")]
            singles = cells[(count, threads, "singles")]
            for way in WAYS:
                cell = cells[(count, threads, way)]
                bad = "child_failed" in cell or cell.get("errors") or cell.get("stuck")
                failed |= bool(bad)
                per_s = cell.get("per_s", 0.0)
                rows.append((str(count), str(threads), way, f"{per_s:,.0f}",
                             f"{ratio(per_s, singles.get('per_s', 0.0)):.2f}x",
                             f"{ratio(per_s, base.get('per_s', 0.0)):.2f}x",
                             load_text(cell),
                             "FAIL" if bad else "ok"))
    print_table(("reads", "threads", "way", "requests/s", "÷ singles", "÷ direct", "load",
                 "correct"), rows, args.markdown, left=3)
    for cell in (c for found in runs.values() for c in found):
        if "child_failed" in cell or cell.get("errors"):
            print(f"FAILED: {cell}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
