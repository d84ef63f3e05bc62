"""What a statement costs in a write block (``with db.writer() as w``) against a fn's conn.

Run from the repository root::

    .venv/bin/python -m benchmarks.writeblock                 # synchronous=OFF, 20,000 statements
    .venv/bin/python -m benchmarks.writeblock --synchronous FULL --calls 200 --markdown

Per statement: ``--n`` statements (a point read and an UPDATE of the row read,
alternately) run inside one ``db.transaction(fn)`` on the fn's ``conn``, and
the same inside one write block on ``w`` (from the caller's thread, directly
on the write connection, each statement marking the block busy under its
lock). Per call: a read-modify-write (the same two statements) as one
``db.transaction(fn)`` and as one write block, ``--calls`` times from one
thread (a block always goes through the worker: two more thread hand-offs).
Each figure is the best of ``--rounds`` rounds; the ratio is block / fn, from
the same run. The load average is printed: compare only quiet runs.

The run is one cell: the 1-minute load average before and after it is printed,
with QUIET or BUSY (started at >= 1.0: the figures do not hold); it does not
wait for a quiet machine (see ``quiet.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

from sqlite_gateway import Gateway

from .harness import machine_lines, print_header, print_table, whole
from .quiet import cell_load, quiet_line

READ = "SELECT n FROM counter WHERE id = ?"
WRITE = "UPDATE counter SET n = ? WHERE id = ?"


def statements(run: Callable[[str, tuple[object, ...]], object], n: int) -> float:
    """Seconds for ``n`` statements through ``run`` (read and write alternately)."""
    began = time.perf_counter()
    for i in range(n // 2):
        run(READ, (1,))
        run(WRITE, (i, 1))
    return time.perf_counter() - began


def per_statement(db: Gateway, n: int) -> tuple[float, float]:
    """(µs per statement on a fn's conn, the same on a write block's w)."""
    on_fn = db.transaction(lambda conn: statements(conn.execute, n))
    with db.writer() as w:
        on_block = statements(w.execute, n)
    return on_fn / n * 1e6, on_block / n * 1e6


def per_call(db: Gateway, calls: int) -> tuple[float, float]:
    """(µs per read-modify-write as a transaction fn, the same as a write block)."""
    def rmw(conn: object) -> None:
        n = conn.execute(READ, (1,)).scalar()  # type: ignore[attr-defined]
        conn.execute(WRITE, (n + 1, 1))  # type: ignore[attr-defined]

    began = time.perf_counter()
    for _ in range(calls):
        db.transaction(rmw)
    on_fn = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(calls):
        with db.writer() as w:
            rmw(w)
    on_block = time.perf_counter() - began
    return on_fn / calls * 1e6, on_block / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=whole, default=20_000, help="statements per round")
    parser.add_argument("--calls", type=whole, default=2_000, help="calls per round")
    parser.add_argument("--rounds", type=whole, default=5)
    parser.add_argument("--synchronous", default="OFF", choices=("OFF", "NORMAL", "FULL"))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    print_header(machine_lines(f"synchronous={args.synchronous}, n={args.n}, "
                               f"calls={args.calls}, rounds={args.rounds}"), args.markdown)
    with tempfile.TemporaryDirectory() as tmp, Gateway(
            os.path.join(tmp, "bench.db"), synchronous=args.synchronous, hold_limit=600,
            hang_timeout=None, timeout=None) as db, cell_load() as load:
        db.execute("CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER)")
        db.execute("INSERT INTO counter VALUES (1, 0)")
        statement = [per_statement(db, args.n) for _ in range(args.rounds)]
        call = [per_call(db, args.calls) for _ in range(args.rounds)]
    fn_st, block_st = min(s[0] for s in statement), min(s[1] for s in statement)
    fn_call, block_call = min(c[0] for c in call), min(c[1] for c in call)
    print()
    print_table(("what", "fn conn (us)", "write block (us)", "block / fn"), [
        ("one statement (in one fn / one block)", f"{fn_st:.2f}", f"{block_st:.2f}",
         f"{block_st / fn_st:.2f}x"),
        ("one read-modify-write call, 1 thread", f"{fn_call:.1f}", f"{block_call:.1f}",
         f"{block_call / fn_call:.2f}x"),
    ], args.markdown)
    print(f"\n{quiet_line([load])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
