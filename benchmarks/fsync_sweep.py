"""The write comparisons with the disk as a controlled variable: what an fsync costs.

Run from the repository root::

    .venv/bin/python -m benchmarks.fsync_sweep                # about 3 min
    .venv/bin/python -m benchmarks.fsync_sweep --markdown --repeat 3

The group-commit gateway pays one fsync per batch, ``busy`` one per
transaction, the bare loop one per batch: their ratios move with the cost of
an fsync, so a figure measured on one disk does not hold on another. Here the
``pageview-fn`` comparisons (``gateway``, ``busy``, the ``bare`` loop;
``synchronous=FULL``; 1 and 32 threads by default) run on a RAM-backed
directory (``/dev/shm``) through :class:`benchmarks.vfs.slow_sync.SlowSyncVFS`, which
sleeps a fixed time in every xSync (every strategy opens its connections
through it by name), at 0.05, 0.5, 2 and 8 ms per fsync (about NVMe, SATA
SSD, a cloud volume, a spinning disk), and once on this machine's real disk
beside them. Printed: one table per delay (each cell with its load average),
then gateway / busy and gateway / bare per delay, and a chart of both ratios
against the delay (``benchmarks/fsync_sweep.png``): a reader picks the delay
of their disk and reads off the ratio.

Options: ``--delays 0.05,0.5,2,8`` (ms), ``--threads 1,32``, ``--seconds 3``,
``--repeat 1`` (round-robin runs per cell, the median kept), ``--no-real``
(skip the real disk), ``--markdown``, ``--chart PATH``, ``--no-chart``.
Each cell runs in a fresh child (``compare.py``'s) once the 1-minute load
average is under 0.9 (``--no-wait-quiet``, ``--quiet-below``, ``--quiet-max-wait``:
see ``quiet.py``), and is marked BUSY when it was >= 1.0 as it started: only a
run whose every cell is quiet gives figures that hold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from .compare import Cells, run_config, table
from .harness import (Progress, csv_of, machine_lines, non_negative, print_header, print_table,
                      ratio, whole)
from .quiet import add_quiet_options, load_text, quiet_line, quiet_wait
from .vfs.slow_sync import ram_directory

DELAYS_MS = (0.05, 0.5, 2.0, 8.0)  # NVMe, SSD, cloud volume, spinning disk
DISKS = {0.05: "NVMe", 0.5: "SSD", 2.0: "cloud volume", 8.0: "spinning disk"}
STRATEGIES = ("gateway", "busy", "bare")
DEFAULT_CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsync_sweep.png")

Row = tuple[str, float | None, Cells]  # (label, delay in ms or None for the real disk, cells)


def disk_label(delay: float | None) -> str:
    if delay is None:
        return "real disk (this machine)"
    name = DISKS.get(delay)
    return f"{delay:g} ms fsync" + (f" (~{name})" if name else "")


def ratio_rows(runs: Sequence[Row], threads: Sequence[int]) -> list[tuple[str, ...]]:
    """One row per (disk, threads): gateway / busy, gateway / bare, batch, fsync, load."""
    rows = []
    for label, _, cells in runs:
        for count in threads:
            gw, busy, bare = (cells.get((n, count)) for n in STRATEGIES)
            if gw is None or busy is None or bare is None:
                continue
            fsync = gw.get("fsync_ms")
            rows.append((label, str(count), f"{ratio(gw['ops_per_s'], busy['ops_per_s']):.2f}x",
                         f"{ratio(gw['ops_per_s'], bare['ops_per_s']):.2f}x",
                         f"{gw['ops_per_s']:,.0f}", f"{busy['ops_per_s']:,.0f}",
                         f"{bare['ops_per_s']:,.0f}", f"{gw.get('batch_mean', 0.0):.1f}",
                         "-" if fsync is None else f"{fsync:.2f}",
                         " / ".join(load_text(c) for c in (gw, busy, bare))))
    return rows


def draw(path: str, runs: Sequence[Row], threads: Sequence[int]) -> str | None:
    """Ratios against the fsync delay (log x), one line per (ratio, threads); the
    real disk as horizontal marks. Returns why no chart was drawn, or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), squeeze=False)
    for ax, other in zip(axes[0], ("busy", "bare"), strict=True):
        for i, count in enumerate(threads):
            points = []
            for _, delay, cells in runs:
                gw, base = cells.get(("gateway", count)), cells.get((other, count))
                if gw is None or base is None or not base["ops_per_s"]:
                    continue
                value = gw["ops_per_s"] / base["ops_per_s"]
                if delay is None:
                    ax.axhline(value, color=f"C{i}", linestyle="--", linewidth=1,
                               label=f"{count} thread{'s' if count > 1 else ''}, real disk")
                else:
                    points.append((delay, value))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", color=f"C{i}",
                        label=f"{count} thread{'s' if count > 1 else ''}, fsync delay")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("fsync delay, ms (0.05 NVMe, 0.5 SSD, 2 cloud volume, 8 spinning disk)")
        ax.set_ylabel(f"gateway ops/s ÷ {other} ops/s")
        ax.set_title(f"pageview-fn, synchronous=FULL: gateway / {other}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write comparisons at controlled fsync costs.")
    parser.add_argument("--delays", type=csv_of(float), default=DELAYS_MS,
                        help="fsync delays in ms (default 0.05,0.5,2,8)")
    parser.add_argument("--threads", type=csv_of(int), default=(1, 32))
    parser.add_argument("--seconds", type=non_negative, default=3.0)
    parser.add_argument("--repeat", type=whole, default=1)
    parser.add_argument("--no-real", action="store_true", help="skip the real-disk run")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--chart", default=DEFAULT_CHART)
    parser.add_argument("--no-chart", action="store_true")
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error("--seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    delays: list[float | None] = [*([] if args.no_real else [None]), *args.delays]
    progress = Progress(args.repeat * len(delays) * len(args.threads) * len(STRATEGIES))
    ram = ram_directory(prefix="fsync-sweep-")
    runs: list[Row] = []
    quiet = quiet_wait(args)
    began = time.monotonic()
    try:
        for delay in delays:
            config: dict[str, Any] = {
                "workload": "pageview-fn", "synchronous": "FULL", "think_ms": 0.0,
                "seconds": args.seconds, "readers": None, "fsync_delay_ms": delay,
                "directory": None if delay is None else ram}
            runs.append((disk_label(delay), delay,
                         run_config(config, STRATEGIES, args.threads, progress, args.repeat,
                                    quiet)))
    finally:
        progress.close()
        shutil.rmtree(ram, ignore_errors=True)
    every = [cell for _, _, cells in runs for cell in cells.values()]
    settings = (f"pageview-fn, synchronous=FULL, threads {','.join(map(str, args.threads))}, "
                f"{args.seconds:g} s per cell, {args.repeat} run(s) per cell; delays on "
                f"{os.path.dirname(ram)} through SlowSyncVFS")
    print_header(machine_lines(settings), args.markdown)
    print()
    print(quiet_line(every))
    print(quiet.line())
    for label, _, cells in runs:
        print()
        head, rows = table({"workload": "pageview-fn"}, cells, STRATEGIES, args.threads)
        print_table(head, rows, args.markdown, left=2, title=label)
    print()
    print_table(["disk", "threads", "gateway ÷ busy", "gateway ÷ bare", "gateway ops/s",
                 "busy ops/s", "bare ops/s", "gateway batch", "fsync ms (measured)",
                 "load gateway / busy / bare"],
                ratio_rows(runs, args.threads), args.markdown, left=2,
                title="The ratios against the cost of an fsync")
    print()
    if not args.no_chart:
        print(draw(args.chart, runs, args.threads) or f"chart: {os.path.relpath(args.chart)}")
    print(f"total time: {time.monotonic() - began:.0f} s")
    failed = [c for c in every if "na" not in c and not c.get("correct")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
