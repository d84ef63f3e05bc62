"""What every benchmark script shares: figures, tables, argument types, child cells.

``benchmarks`` is a package: each script runs as ``python -m benchmarks.<name>``
from the checkout's root and imports this module as ``.harness``. Tests may
import benchmarks; benchmarks never import tests.

- figures: :func:`percentile` (nearest rank), :func:`percentile_of_counts` (the
  same over a histogram), :func:`half_wait` (the time-weighted median), :func:`ratio`;
- tables: :func:`print_table` (aligned columns, or Markdown for the README),
  :func:`print_header` and :func:`machine_lines` (what ran, where, by which command);
- argument types for argparse: :func:`csv_of`, :func:`whole`, :func:`non_negative`,
  :func:`positive`;
- cells in child processes: :func:`run_child` runs ``-m module --cell SPEC`` in a fresh
  interpreter (no threads or state leak from one cell into the next), bounded in time,
  after a wait for a quiet machine, and returns the JSON object the child printed last
  with the load average before and after it (the load rules are in :mod:`.quiet`).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .quiet import QuietWait, cell_load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The checkout's root (the folder holding ``benchmarks/`` and ``sqlite_gateway/``)."""


# -- figures ------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of a sorted sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def percentile_of_counts(counts: Mapping[float, int], q: float) -> float:
    """Nearest-rank percentile of a histogram ``{value: how many}`` (NaN when empty)."""
    total = sum(counts.values())
    if not total:
        return float("nan")
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return float(value)
    return float(max(counts))  # not reached: seen ends at total


def half_wait(ordered: Sequence[float]) -> float:
    """The time-weighted median of sorted latencies: the latency below which half
    of all callers' waiting time falls (where the running sum passes half the total)."""
    if not ordered:
        return 0.0
    running = list(itertools.accumulate(ordered))
    return ordered[min(len(ordered) - 1, bisect.bisect_left(running, running[-1] / 2))]


def ratio(a: float, b: float) -> float:
    """a / b, infinite when b is 0."""
    return a / b if b else math.inf


def starved(counts: Sequence[int], share: float = 0.10) -> int:
    """How many threads completed fewer than ``share`` of the mean count per
    thread (with the default, under 10 % of a fair share; 0 when none ran)."""
    if not counts:
        return 0
    floor = share * sum(counts) / len(counts)
    return sum(count < floor for count in counts)


# -- tables -------------------------------------------------------------------------


def print_table(head: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False,
                *, left: int = 1, title: str | None = None) -> None:
    """Print ``rows`` under ``head``.

    The first ``left`` columns are labels (left-aligned), the others figures
    (right-aligned). Markdown gives a table for the README (with ``title`` as
    a heading); otherwise aligned columns with a rule under the head.
    """
    cells = [[str(x) for x in row] for row in rows]
    if title:
        print(f"#### {title}\n" if markdown else title)
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(":---" if i < left else "---:" for i in range(len(head))) + "|")
        for row in cells:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(x.ljust(w) if i < left else x.rjust(w)
                         for i, (x, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    print(line(head))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def machine_lines(settings: str, **extra: str) -> list[tuple[str, str]]:
    """The header of a report: interpreter, SQLite, machine, ``settings``, the command."""
    import apsw

    lines = [
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("apsw", f"{apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}"),
        *extra.items(),
        ("cpus", str(os.cpu_count())),
        # Other work on the machine skews every figure: say how busy it was.
        ("load average", ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"),
        ("platform", platform.platform()),
        ("database dir", tempfile.gettempdir()),
        ("settings", settings),
        ("command", shlex.join(sys.orig_argv)),
    ]
    return lines


def print_header(lines: Sequence[tuple[str, str]], markdown: bool = False,
                 align: bool = True) -> None:
    """``key: value`` lines (values aligned), or a Markdown list (the command in backticks)."""
    if markdown:
        for key, value in lines:
            print(f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}")
        return
    width = max(len(key) for key, _ in lines) if align else 0
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")


# -- argument types -----------------------------------------------------------------


def csv_of(kind: Callable[[str], Any],
           choices: Sequence[Any] | None = None) -> Callable[[str], tuple[Any, ...]]:
    """An argparse type: a comma-separated list of ``kind`` (ints must be >= 1),
    each among ``choices`` when given."""
    def parse(text: str) -> tuple[Any, ...]:
        try:
            values = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        bad = [v for v in values if (choices is not None and v not in choices)
               or (isinstance(v, int) and v < 1)]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"bad value(s) {bad or text!r}"
                                             + (f"; choose from {', '.join(choices)}"
                                                if choices else ""))
        return values
    return parse


def whole(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def non_negative(text: str) -> float:
    """An argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def positive(text: str) -> float:
    """An argparse type: a number > 0."""
    value = non_negative(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


# -- cells in child processes -----------------------------------------------------------


def python_m(module: str, *args: str) -> list[str]:
    """The command for ``python -m module args`` in this interpreter (how a script
    runs a cell of its own, or another benchmark, in a child)."""
    return [sys.executable, "-m", module, *args]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout first on ``PYTHONPATH``, so that
    a child imports ``benchmarks`` (and this checkout's library) from any directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@contextlib.contextmanager
def workdir(keep: str | None, prefix: str) -> Iterator[str]:
    """``keep`` (made if missing, left in place), or a temporary folder removed at the end."""
    if keep:
        os.makedirs(keep, exist_ok=True)
        yield keep
        return
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_child(module: str, spec: Mapping[str, Any], limit: float,
              tick: Callable[[], None] | None = None,
              quiet: QuietWait | None = None) -> dict[str, Any]:
    """Run ``python -m module --cell JSON(spec)`` and return the JSON object it printed last.

    Bounded: a child still running after ``limit`` seconds is killed. On a crash,
    a timeout or no output, returns ``{"child_failed": reason, ...}`` with the
    last lines of its stderr, so the caller can report a failed cell.
    ``tick`` is called about four times a second while the child runs.
    With ``quiet``, first waits for a quiet machine (:meth:`QuietWait.wait`).
    Every answer carries :func:`load_fields`: the 1-minute load average before and
    after the child, ``busy``, and ``waited_s`` with ``quiet``.
    """
    with cell_load(quiet) as load:
        result = _run_child(module, spec, limit, tick)
    result.update(load)
    return result


def _run_child(module: str, spec: Mapping[str, Any], limit: float,
               tick: Callable[[], None] | None) -> dict[str, Any]:
    proc = subprocess.Popen(python_m(module, "--cell", json.dumps(spec)), env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    give_up = time.monotonic() + limit
    while True:  # bounded: give_up
        try:
            out, err = proc.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            if tick is not None:
                tick()
            if time.monotonic() > give_up:
                proc.kill()
                proc.communicate()
                return {"child_failed": f"child timed out after {limit:.0f} s"}
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = err.strip().splitlines()[-3:]
        return {"child_failed": f"child exited {proc.returncode}", "stderr": tail}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Progress:
    """Progress of a run on stderr: a tqdm bar, or plain lines when tqdm is missing."""

    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, file=sys.stderr, unit="cell", dynamic_ncols=True,
                            mininterval=0.5)
        self.live = sys.stderr.isatty()  # redraw the clock while a cell runs

    def begin(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(label)

    def tick(self) -> None:
        if self.bar is not None and self.live:
            self.bar.refresh()

    def end(self, line: str) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {line}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def child_cell(args_cell: str, run: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The child's side of :func:`run_child`: run the cell, print its JSON line.

    A cell that reports ``stuck`` threads exits without waiting for them.
    """
    cell = run(json.loads(args_cell))
    print(json.dumps(cell), flush=True)
    if cell.get("stuck"):
        os._exit(0)  # a stuck caller thread must not hold the exit
    return 0
