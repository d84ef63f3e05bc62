"""Timing small pieces of code (steps.py): per-iteration ``perf_counter_ns``, the
median and the mean in microseconds, less the timer's own cost.

The median is the figure to read on a shared machine: a preempted iteration moves the
mean, not the median. Pieces whose figures are subtracted from each other are best
timed :meth:`Timer.interleaved` (called in turn), so that a difference between two of
them is not a drift of the machine between two loops.
"""

from __future__ import annotations

import statistics
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

clock = time.perf_counter_ns
Figure = tuple[float, float]  # us: (median, mean) over the iterations


def timer_cost(n: int = 20_000) -> float:
    """ns of one clock() pair (the median), subtracted from every figure."""
    times = []
    for _ in range(n):
        t0 = clock()
        times.append(clock() - t0)
    return float(statistics.median(times))


class Timer:
    """Times pieces ``n`` times each (``n`` unless told), less one clock pair."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.zero = timer_cost()

    def each(self, piece: Callable[[Any], object], setup: Callable[[int], Any] | None = None,
             n: int | None = None) -> Figure:
        """us per ``piece(setup(i))``, the setup outside the timing."""
        n = n or self.n
        times = array("q", bytes(8 * n))
        for i in range(n):
            x = setup(i) if setup is not None else None
            t0 = clock()
            piece(x)
            times[i] = clock() - t0
        return self.figure(times)

    def interleaved(self, pieces: dict[str, Callable[[], object]], n: int) -> dict[str, Figure]:
        """us per call of each piece, the pieces called in turn, so that a difference
        between two of them is not a drift of the machine between two loops."""
        times: dict[str, list[int]] = {name: [] for name in pieces}
        for _ in range(n):
            for name, piece in pieces.items():
                t0 = clock()
                piece()
                times[name].append(clock() - t0)
        return {name: self.figure(ts) for name, ts in times.items()}

    def figure(self, times: Sequence[int], pairs: int = 1) -> Figure:
        """(median, mean) in us of per-iteration ns, less ``pairs`` timer costs."""
        zero = pairs * self.zero
        return ((statistics.median(times) - zero) / 1000,
                (sum(times) / len(times) - zero) / 1000)


def us(figure: Figure) -> tuple[str, str]:
    """The two figures of ``figure`` as table cells."""
    return f"{figure[0]:.2f}", f"{figure[1]:.2f}"


def minus(a: Figure, *others: Figure, share: float = 1.0) -> Figure:
    """a less the others (median from medians, mean from means), times ``share``."""
    return ((a[0] - sum(o[0] for o in others)) * share,
            (a[1] - sum(o[1] for o in others)) * share)
