"""The speed goals (the gateway against the floors and the old ways), read from the
cells of one ``compare.py --goals`` run.

Every ratio comes from the same run: cells run one after another on the same
machine, each in a fresh process, ``--repeat`` times round-robin (3 by default
with ``--goals``), and each side of a ratio is its median run. Goals:

1. writes through ``transaction(fn)`` (``pageview-fn``), 32 threads: the gateway
   >= 0.9x the bare group-commit loop, at FULL and at NORMAL; >= 3x ``busy`` at
   FULL; at 1 thread >= the naive queue;
2. reads: ``mixed`` with readers = threads (32): gateway+readers >= 0.95x
   ``busy``; with twice as many threads as readers (64 on 32): >= 0.9x ``busy``;
   ``point-read`` at 1 and 32 threads: >= 0.9x ``direct`` per-thread connections;
3. no starved thread in the product's cells; p99 shown beside the other's.

Lines marked ``info`` are figures without a goal (e.g. busy at NORMAL).
"""

from __future__ import annotations

from typing import Any

from .harness import ratio

# (workload, synchronous, threads, readers, strategies): one table each.
GOAL_PLAN = (
    ("pageview-fn", "FULL", 32, None, ("gateway", "bare", "busy", "naive", "ceiling")),
    ("pageview-fn", "NORMAL", 32, None, ("gateway", "bare", "busy")),
    ("pageview-fn", "FULL", 1, None, ("gateway", "naive", "bare")),
    ("mixed", "FULL", 32, 32, ("gateway+readers", "busy")),
    ("mixed", "FULL", 64, 32, ("gateway+readers", "busy")),
    ("point-read", "FULL", 1, None, ("gateway+readers", "direct")),
    ("point-read", "FULL", 32, None, ("gateway+readers", "direct")),
)

# For each entry of GOAL_PLAN: (product, other, goal ratio or None for info only).
GOALS: tuple[tuple[tuple[str, str, float | None], ...], ...] = (
    (("gateway", "bare", 0.9), ("gateway", "busy", 3.0), ("gateway", "naive", None)),
    (("gateway", "bare", 0.9), ("gateway", "busy", None)),
    (("gateway", "naive", 1.0), ("gateway", "bare", None)),
    (("gateway+readers", "busy", 0.95),),
    (("gateway+readers", "busy", 0.9),),
    (("gateway+readers", "direct", 0.9),),
    (("gateway+readers", "direct", 0.9),),
)


def goal_lines(index: int, cells: dict[tuple[str, int], dict[str, Any]],
               threads: int) -> list[tuple[str, str]]:
    """(verdict, text) for each goal of GOAL_PLAN[index]: PASS, MISS or info."""
    def ok(name: str) -> dict[str, Any] | None:
        cell = cells.get((name, threads))
        return None if cell is None or "na" in cell or not cell.get("correct") else cell

    workload, synchronous = GOAL_PLAN[index][:2]
    where = f"{workload} {synchronous} x{threads}"
    out: list[tuple[str, str]] = []
    for product, other, goal in GOALS[index]:
        a, b = ok(product), ok(other)
        want = "info" if goal is None else f"goal >= {goal:g}x"
        if a is None or b is None:
            out.append(("info" if goal is None else "MISS",
                        f"{where}: {product} / {other}: n/a (a cell was n/a or failed; {want})"))
            continue
        r = ratio(a["ops_per_s"], b["ops_per_s"])
        verdict = "info" if goal is None else "PASS" if r >= goal else "MISS"
        spread = ""
        if a.get("runs") and b.get("runs"):
            spread = (f"; runs {'/'.join(f'{x:,.0f}' for x in a['runs'])} vs "
                      f"{'/'.join(f'{x:,.0f}' for x in b['runs'])}")
        out.append((verdict, f"{where}: {product} / {other} = {r:.2f}x ({want}; "
                             f"{a['ops_per_s']:,.0f} vs {b['ops_per_s']:,.0f} ops/s; p99 "
                             f"{a['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms{spread})"))
    product = GOALS[index][0][0]
    mine = ok(product)
    starved = "n/a" if mine is None else mine["starved"]
    out.append(("PASS" if starved == 0 else "MISS",
                f"{where}: {product} starved threads = {starved} (goal 0); errors "
                f"{'n/a' if mine is None else mine['errors']}"))
    return out
