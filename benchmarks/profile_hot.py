"""The gateway's hot path under load, in this one process, for a profiler to attach to.

Run from the repository root::

    .venv/bin/python -m benchmarks.profile_hot                      # pageview-fn, 1 and 32 threads
    py-spy record -f raw -o out.txt -- .venv/bin/python -m benchmarks.profile_hot --seconds 10
    py-spy record -f speedscope -o out.json --threads 1 -- ...      # per thread, in speedscope

Options: ``--threads 1,32``, ``--seconds 5`` (per thread count), ``--strategy gateway``
(any of compare.py's strategies: profile the floor the same way, e.g. ``bare``),
``--workload pageview-fn`` (any of compare.py's), ``--synchronous FULL``,
``--readers N``.

Unlike compare.py, every run is in this process (no child per cell), one after
another, each on a fresh database; it prints ops/s, p50/p99 and the 1-minute
load average before -> after per run (BUSY when it started at >= 1.0; no wait
for a quiet machine: a profiler is attached by hand), so a profile can be read
beside its throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


from .harness import csv_of, positive, print_table
from .quiet import cell_load, load_text, quiet_line
from .strategies import JOIN_GRACE, STRATEGIES, make_strategy
from .workloads import WORKLOADS, check_database, create_schema, run_cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=csv_of(int), default=(1, 32))
    parser.add_argument("--seconds", type=positive, default=5.0)
    parser.add_argument("--strategy", choices=STRATEGIES, default="gateway")
    parser.add_argument("--workload", choices=WORKLOADS, default="pageview-fn")
    parser.add_argument("--synchronous", type=str.upper, choices=("FULL", "NORMAL", "OFF"),
                        default="FULL")
    parser.add_argument("--readers", type=int, default=None)
    args = parser.parse_args(argv)
    rows, failed = [], False
    loads: list[dict[str, object]] = []
    for threads in args.threads:
        with tempfile.TemporaryDirectory(prefix="sqlite-gateway-profile-") as tmp:
            path = os.path.join(tmp, "bench.db")
            create_schema(path, args.workload)
            strategy = make_strategy(args.strategy, path, args.synchronous, threads,
                                     args.readers)
            strategy.open()
            print(f"running {args.strategy} on {args.workload}, {threads} threads, "
                  f"{args.seconds:g} s (pid {os.getpid()})", file=sys.stderr, flush=True)
            with cell_load() as load:
                cell = run_cell(strategy, args.workload, threads, args.seconds, 0.0,
                                JOIN_GRACE)
            cell.update(check_database(path, cell["writes"]), **load)
            loads.append(load)
        failed |= bool(cell["errors"]) or not cell["correct"]
        rows.append((str(threads), f"{cell['ops_per_s']:,.0f}", f"{cell['p50_ms']:.2f}",
                     f"{cell['p99_ms']:.2f}", str(cell["errors"]),
                     f"{cell['batch_mean']:.1f}" if "batch_mean" in cell else "-",
                     load_text(load), "ok" if cell["correct"] else "FAIL"))
    print(f"{args.strategy}, {args.workload}, synchronous={args.synchronous}, "
          f"{args.seconds:g} s per run, in-process")
    print(quiet_line(loads))
    print_table(("threads", "ops/s", "p50 ms", "p99 ms", "errors", "batch mean", "load",
                 "correct"),
                rows, left=0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
