"""compare.py's chart: ops/s against threads, one line per strategy, one panel per table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .strategies import STRATEGIES


def draw_chart(path: str, results: Sequence[tuple[str, dict[tuple[str, int], dict[str, Any]]]],
               strategies: Sequence[str], threads: Sequence[int]) -> str | None:
    """Write the PNG; return why not (matplotlib missing), or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5.2), squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(STRATEGIES)}  # the same in every panel
    labels: dict[str, Any] = {}
    for ax, (title, cells) in zip(axes[0], results, strict=True):
        for name in strategies:
            points = [(n, cells[name, n]["ops_per_s"]) for n in threads
                      if (name, n) in cells and "na" not in cells[name, n]
                      and cells[name, n]["ops_per_s"] > 0]
            if not points:
                continue
            if name == "ceiling":
                labels["ceiling (1 thread, one transaction)"] = ax.axhline(
                    points[0][1], color="black", linestyle="--", linewidth=1)
                continue
            labels[name], = ax.plot(*zip(*points, strict=False), marker="o", color=colours[name],
                                    linestyle=":" if name in ("bare", "naive", "direct") else "-",
                                    linewidth=2.5 if name.startswith("gateway") else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(threads), [str(n) for n in threads])
        ax.set_xlabel("caller threads")
        ax.set_ylabel("operations per second")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=5, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
