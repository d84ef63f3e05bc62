"""The machine's load: wait for a quiet machine before each cell, record the load per cell.

A figure taken while other work competes for the cores does not hold. Every
benchmark that prints figures therefore

- waits, before each cell, until the 1-minute load average is under
  :data:`QUIET_BELOW` (at most :data:`QUIET_MAX_WAIT` seconds; ``--no-wait-quiet``
  turns it off), with a :class:`QuietWait` made from :func:`add_quiet_options`'
  options (the one-cell scripts and the profiling target skip this step);
- records the load average before and after each cell (:func:`cell_load`,
  :func:`load_fields`) and marks a cell that started at :data:`BUSY_LOAD` or
  more as BUSY;
- prints one line for the run (:func:`quiet_line`): QUIET when every cell
  started under BUSY_LOAD, BUSY otherwise, and the quiet wait's
  (:meth:`QuietWait.line`).

The load average counts runnable threads, the benchmark's own included, so a
benchmark's back-to-back cells raise it; the kernel updates it every 5 s and it
decays with a 1-minute time constant.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

BUSY_LOAD = 1.0
"""A cell that starts with the 1-minute load average at or above this was taken on a
busy machine: other work competed for the cores, and its figures do not hold."""

QUIET_BELOW = 0.9
"""Before a cell starts, wait until the 1-minute load average is under this: under
BUSY_LOAD with a margin, since the figure lags (an average, updated every 5 s): a reading
just under 1.0 still carries much of the previous cell's threads."""

QUIET_MAX_WAIT = 90.0
"""At most this many seconds of waiting per cell; then the cell runs anyway (and is
marked BUSY if the load is still >= BUSY_LOAD). From a load of 2 on an idle machine the
1-minute average needs about 50 s to fall under 0.9."""

QUIET_POLL = 1.0
"""Seconds between two looks at the load while waiting (the kernel updates it every 5 s)."""


def load_average() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


class QuietWait:
    """Waits, before each cell, until the machine is quiet; remembers how long it waited.

    A benchmark's own back-to-back cells push the 1-minute load average up; waiting
    for it to fall under ``below`` lets every cell start on a quiet machine. One
    instance serves one run (it keeps every wait, for :meth:`line`). Not
    thread-safe: cells run one after another.

    Args:
        below: wait while the load is at or above this (> 0).
        max_wait: seconds to wait at most per cell (>= 0); then the cell runs anyway.
        enabled: False waits never (``--no-wait-quiet``): quick local runs.
        load: the load source (default: the 1-minute load average); tests inject one.
        sleep: how to pass ``poll`` seconds (default ``time.sleep``).
        clock: a monotonic clock in seconds (default ``time.monotonic``).
        poll: seconds between two looks at the load (> 0).
        say: where to say that a cell waits (default: a line on stderr), once per wait.

    Raises:
        ValueError: ``below``, ``max_wait`` or ``poll`` out of range.
    """

    def __init__(self, below: float = QUIET_BELOW, max_wait: float = QUIET_MAX_WAIT, *,
                 enabled: bool = True, load: Callable[[], float] = load_average,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 poll: float = QUIET_POLL,
                 say: Callable[[str], None] | None = None) -> None:
        if not below > 0:
            raise ValueError(f"below must be a load average > 0, not {below!r}")
        if not max_wait >= 0 or not math.isfinite(max_wait):
            raise ValueError(f"max_wait must be a number of seconds >= 0, not {max_wait!r}")
        if not poll > 0 or not math.isfinite(poll):
            raise ValueError(f"poll must be a number of seconds > 0, not {poll!r}")
        self.below, self.max_wait, self.enabled, self.poll = below, max_wait, enabled, poll
        self._load, self._sleep, self._clock = load, sleep, clock
        self._say = say if say is not None else _to_stderr
        self.waits: list[float] = []  # seconds waited before each cell, in order
        self.gave_up = 0  # cells that started after max_wait with the load still high

    def wait(self) -> float:
        """Block until the load is under ``below`` or ``max_wait`` has passed; return
        the seconds waited (0.0 at once when disabled or already quiet)."""
        if not self.enabled:
            return 0.0
        began = self._clock()
        give_up = began + self.max_wait
        quiet = False
        # Bounded twice: by the clock, and by the number of polls the wait can hold.
        for look in range(math.ceil(self.max_wait / self.poll) + 1):
            load = self._load()
            quiet = load < self.below
            left = give_up - self._clock()
            if quiet or left <= 0:
                break
            if look == 0:
                self._say(f"waiting for the 1-minute load average ({load:.2f}) to fall under "
                          f"{self.below:g} (at most {self.max_wait:g} s)")
            self._sleep(min(self.poll, left))
        waited = self._clock() - began
        self.gave_up += not quiet
        self.waits.append(waited)
        return waited

    def line(self) -> str:
        """One line for the report: the rule, the total waited, the longest wait."""
        if not self.enabled:
            return "quiet wait: off (--no-wait-quiet): cells started back to back"
        total, longest = sum(self.waits), max(self.waits, default=0.0)
        text = (f"quiet wait: each cell waited for load < {self.below:g} (at most "
                f"{self.max_wait:g} s): {total:.0f} s in all over {len(self.waits)} cells, "
                f"longest {longest:.0f} s")
        if self.gave_up:
            text += f"; {self.gave_up} started before the load fell"
        return text


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def add_quiet_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-wait-quiet``, ``--quiet-below`` and ``--quiet-max-wait`` to ``parser``."""
    from .harness import non_negative, positive  # here: harness imports this module

    def finite_seconds(text: str) -> float:
        value = non_negative(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number of seconds: {text!r}")
        return value

    parser.add_argument("--no-wait-quiet", action="store_true",
                        help="start each cell at once, without waiting for the load "
                             "average to fall (quick local runs; the figures may not hold)")
    parser.add_argument("--quiet-below", type=positive, default=QUIET_BELOW,
                        help="before each cell, wait until the 1-minute load average is "
                             "under this (default %(default)s)")
    parser.add_argument("--quiet-max-wait", type=finite_seconds, default=QUIET_MAX_WAIT,
                        help="seconds to wait at most per cell (default %(default)s)")


def quiet_wait(args: argparse.Namespace) -> QuietWait:
    """The :class:`QuietWait` that :func:`add_quiet_options`' options ask for."""
    return QuietWait(args.quiet_below, args.quiet_max_wait, enabled=not args.no_wait_quiet)


def quiet_args(args: argparse.Namespace) -> list[str]:
    """:func:`add_quiet_options`' options as given, for a benchmark run as a child."""
    if args.no_wait_quiet:
        return ["--no-wait-quiet"]
    return ["--quiet-below", f"{args.quiet_below:g}", "--quiet-max-wait",
            f"{args.quiet_max_wait:g}"]


def load_fields(before: float, after: float, waited: float | None = None) -> dict[str, Any]:
    """The load figures every cell carries: before, after, ``busy`` (before >=
    BUSY_LOAD), and ``waited_s`` (seconds it waited for quiet) when it waited."""
    fields: dict[str, Any] = {"load_before": round(before, 2), "load_after": round(after, 2),
                              "busy": before >= BUSY_LOAD}
    if waited is not None:
        fields["waited_s"] = round(waited, 1)
    return fields


@contextlib.contextmanager
def cell_load(quiet: QuietWait | None = None) -> Iterator[dict[str, Any]]:
    """Around one cell (or one path) run in this process: wait for quiet first (when
    ``quiet`` is given), then record the load; the yielded dict gets
    :func:`load_fields` as the block ends (only if it ends without an exception)::

        with cell_load(quiet) as load:
            figures = run()
        figures.update(load)
    """
    waited = quiet.wait() if quiet is not None else None
    fields: dict[str, Any] = {}
    before = load_average()
    yield fields
    fields.update(load_fields(before, load_average(), waited))


LOAD_KEYS = ("load_before", "load_after", "busy", "waited_s")
"""The keys :func:`load_fields` gives a cell."""


def load_part(cell: Mapping[str, Any]) -> dict[str, Any]:
    """Only the load figures of ``cell`` (to keep them on a cell whose child failed)."""
    return {key: cell[key] for key in LOAD_KEYS if key in cell}


def load_of_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The load figures of a cell shown as the median of several ``runs``: busy if any
    run was, the highest load before and after, the waits summed."""
    loads = [run for run in runs if "load_before" in run]
    if not loads:
        return {}
    return {"busy": any(run.get("busy") for run in loads),
            "load_before": max(run["load_before"] for run in loads),
            "load_after": max(run["load_after"] for run in loads),
            "waited_s": round(sum(run.get("waited_s", 0.0) for run in loads), 1)}


def load_text(cell: Mapping[str, Any]) -> str:
    """A cell's load average before -> after, BUSY when it started on a busy machine,
    and the seconds it waited for quiet when it waited at least one."""
    if "load_before" not in cell:
        return "-"
    text = f"{cell['load_before']:.2f}->{cell['load_after']:.2f}"
    text += " BUSY" if cell.get("busy") else ""
    if cell.get("waited_s", 0) >= 1:
        text += f" (waited {cell['waited_s']:.0f} s)"
    return text


def quiet_line(cells: Sequence[Mapping[str, Any]]) -> str:
    """One line saying whether a run was quiet: every cell started under BUSY_LOAD."""
    loads = [c for c in cells if "load_before" in c]
    if not loads:
        return "load: not recorded"
    busy = sum(1 for c in loads if c.get("busy"))
    low = min(c["load_before"] for c in loads)
    high = max(max(c["load_before"], c["load_after"]) for c in loads)
    verdict = ("QUIET (every cell started under load %.1f)" % BUSY_LOAD if not busy else
               f"BUSY ({busy} of {len(loads)} cells started at load >= {BUSY_LOAD:.1f}): "
               "these figures do not hold; rerun on a quiet machine")
    return f"load average per cell: {low:.2f} to {high:.2f}; run {verdict}"
