"""Figures shared by the benchmark scripts (importable beside them: each script's
folder is on ``sys.path`` when it runs)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of a sorted sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> None:
    """Print ``rows`` under ``head``: right-aligned columns, or a Markdown table
    (first column left-aligned) for the README."""
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=True)))
