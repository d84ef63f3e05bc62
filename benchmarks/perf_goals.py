"""Every performance goal, PASS or MISS, from one command.

Run from the repository root on a quiet machine (nothing else running)::

    .venv/bin/python -m benchmarks.perf_goals                 # about 10 minutes
    .venv/bin/python -m benchmarks.perf_goals --fsync   # + the fsync sweep, its chart
    .venv/bin/python -m benchmarks.perf_goals --markdown > run.md
    .venv/bin/python -m benchmarks.perf_goals --no-wait-quiet # cells back to back, ~5 min

It runs, one after another, each in its own process:

1. ``benchmarks.compare --goals`` (writes and reads against the floors, each cell
   3 times round-robin, the median kept): the write goals, ``point-read`` >=
   0.9x ``direct`` at 1 and 32 threads, ``mixed`` >= 0.95x ``busy`` at 32
   threads (readers = threads) and >= 0.9x at 64 threads on 32 readers;
2. ``benchmarks.multiprocess --processes 1,4`` with ``process_lock`` off and on:
   4 processes >= 0.9x the views/s of 1, p99 <= 2x, 0 errors, exact counts;
3. ``benchmarks.writebehind``: ``submit()`` >= 0.9x the bare write-behind loop
   with a Future per row, ``post()`` >= 0.9x the bare loop;
4. with ``--fsync``: ``benchmarks.fsync_sweep`` (no goal; the chart).

Each benchmark waits, before each of its cells, until the 1-minute load average
is under 0.9 (at most 90 s per cell): the options ``--no-wait-quiet``,
``--quiet-below`` and ``--quiet-max-wait`` are passed on to each (see ``quiet.py``).
The cells take about 5 minutes back to back (the fsync sweep 2-5 more); the
waits add about 5 more on an otherwise idle machine (docs/benchmarks-perf.md).
Then it prints every goal line again, together, and whether the whole run was
quiet: each benchmark records the 1-minute load average before and after each
cell and marks a cell BUSY when it started at load >= 1.0. Figures from a busy
run do not hold: rerun. Exit status 0 whether goals pass or miss (a cell that
fails its correctness check makes its benchmark, and so this, exit 1).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from .harness import child_env, machine_lines, print_header, python_m
from .quiet import add_quiet_options, quiet_args

STEPS = (
    ("compare --goals", ("benchmarks.compare", "--goals")),
    ("multiprocess", ("benchmarks.multiprocess", "--processes", "1,4", "--process-lock",
                      "off,on")),
    ("writebehind", ("benchmarks.writebehind",)),
)
FSYNC = ("fsync sweep", ("benchmarks.fsync_sweep",))


def run_step(name: str, command: tuple[str, ...], markdown: bool,
             extra: list[str]) -> tuple[int, str, float]:
    """Run one benchmark with ``extra`` options, echo its output as it comes;
    (exit status, output, seconds)."""
    began = time.monotonic()
    args = python_m(command[0], *command[1:], *(["--markdown"] if markdown else []), *extra)
    print(f"\n{'## ' if markdown else '== '}{name}\n", flush=True)
    proc = subprocess.Popen(args, env=child_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # bounded: the child's own cells are bounded in time
        print(line, end="", flush=True)
        lines.append(line)
    proc.wait()
    return proc.returncode, "".join(lines), time.monotonic() - began


def goal_lines(output: str) -> list[str]:
    return [line.strip().removeprefix("- ") for line in output.splitlines()
            if line.strip().removeprefix("- ").startswith(("PASS", "MISS"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Every performance goal, PASS or MISS.")
    parser.add_argument("--fsync", action="store_true", help="also run the fsync sweep")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    began = time.monotonic()
    steps = [*STEPS, *([FSYNC] if args.fsync else [])]
    results = [(name, *run_step(name, command, args.markdown, quiet_args(args)))
               for name, command in steps]
    print(f"\n{'## ' if args.markdown else '== '}summary\n")
    print_header(machine_lines("every goal of the performance issue, one run"), args.markdown)
    print()
    status = 0
    for name, code, output, seconds in results:
        quiet = [line for line in output.splitlines() if line.startswith("load average per cell")]
        waits = [line for line in output.splitlines() if line.startswith("quiet wait:")]
        print(f"{'- ' if args.markdown else ''}{name}: {seconds:.0f} s, exit {code}; "
              f"{quiet[0] if quiet else 'load: not recorded'}; "
              f"{waits[0] if waits else 'quiet wait: not recorded'}")
        status |= code != 0
    print()
    lines = [line for _, _, output, _ in results for line in goal_lines(output)]
    for line in lines:
        print(f"{'- ' if args.markdown else ''}{line}")
    misses = sum(line.startswith("MISS") for line in lines)
    busy = any("run BUSY" in output for _, _, output, _ in results)
    print(f"\ngoals: {len(lines) - misses} PASS, {misses} MISS; machine "
          f"{'BUSY during the run: these figures do not hold' if busy else 'quiet'}; "
          f"total time {time.monotonic() - began:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
