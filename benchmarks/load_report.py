"""The load sweep's report: the full table, README's headline table, the goals, the charts."""

from __future__ import annotations

import math
import os

from .harness import ROOT, print_table
from .open_loop import Cell
from .quiet import load_text

BACKENDS = ("gateway", "busy", "retry")
"""The backends the sweep compares, in the order of its tables and charts."""


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def failures_text(cell: Cell) -> str:
    parts = [f"{kind} {n}" for kind, n in sorted(cell.failures.items())]
    if cell.not_sent:
        parts.append(f"not sent {cell.not_sent}")
    return ", ".join(parts) or "0"


def headline(cells: list[Cell], markdown: bool) -> None:
    """One row per load: each backend's served req/s and p99 (README's table)."""
    swept = [c for c in cells if c.fraction is not None]
    backends = [b for b in BACKENDS if any(c.backend == b for c in swept)]
    by = {(c.backend, c.fraction): c for c in swept}
    head = ["load", "offered/s"]
    for b in backends:
        head += [f"{b} served/s", f"{b} p99 ms"]
    head += ["failures (" + " / ".join(backends) + ")", "db checks"]
    rows = []
    for fraction in sorted({c.fraction for c in swept if c.fraction is not None}):
        row_cells = [by[(b, fraction)] for b in backends if (b, fraction) in by]
        row = [f"{fraction:g}%", f"{row_cells[0].rate:,.0f}"]
        for c in row_cells:
            row += [f"{c.served:,.0f}", ms(c.p(0.99))]
        row += [" / ".join(failures_text(c) for c in row_cells),
                "ok" if all(c.db_ok for c in row_cells) else "FAIL"]
        rows.append(row)
    print_table(head, rows, markdown)


def report(cells: list[Cell], markdown: bool) -> None:
    rows = []
    for c in cells:
        load = "closed loop" if c.fraction is None else f"{c.fraction:g}%"
        rows.append([c.backend, load, f"{c.rate:,.0f}", f"{c.served:,.0f}", ms(c.p(0.50)),
                     ms(c.p(0.95)), ms(c.p(0.99)), ms(c.latencies[-1] if c.latencies
                                                        else float("nan")),
                     failures_text(c), "ok" if c.db_ok else "FAIL", ms(c.gen_lag_p99),
                     ms(c.send_lag_p99), load_text(c.load)])
    print_table(["backend", "load", "offered/s", "served/s", "p50 ms", "p95 ms", "p99 ms",
                 "max ms", "failures", "db checks", "gen lag p99", "send lag p99",
                 "load average"], rows, markdown)
    for c in cells:
        for problem in ([c.error] if c.error else []) + c.problems:
            print(f"- {c.backend} {c.fraction}%: {problem}")
        if not c.graceful:
            print(f"- {c.backend} {c.fraction}%: the app did not stop on SIGTERM (killed)")


def goals(cells: list[Cell]) -> list[str]:
    """The goals, PASS/MISS each, with the figures."""
    by = {(c.backend, c.fraction): c for c in cells if c.fraction is not None}
    lines = []
    for fraction in (75, 90):
        g = by.get(("gateway", fraction))
        others = [by[(b, fraction)] for b in ("busy", "retry") if (b, fraction) in by]
        if g is None or not others:
            continue
        checks = [(g.hard_failures + g.failures["503+RA"] == 0,
                   f"gateway failures {failures_text(g)} (0)")]
        for o in others:
            ratio = o.p(0.99) / g.p(0.99) if g.p(0.99) > 0 else float("nan")
            checks.append((ratio >= 5, f"p99 {ms(g.p(0.99))} ms vs {o.backend} "
                                       f"{ms(o.p(0.99))} ms = 1/{ratio:.1f} (<= 1/5)"))
        lines.append(_verdict(f"at {fraction}%", checks))
    for fraction in (100, 120):
        g = by.get(("gateway", fraction))
        others = [by[(b, fraction)] for b in ("busy", "retry") if (b, fraction) in by]
        if g is None or not others:
            continue
        best = max(others, key=lambda o: o.served)
        ratio = g.served / best.served if best.served else float("inf")
        checks = [(ratio >= 1.0, f"served {g.served:,.0f}/s vs best other ({best.backend}) "
                                 f"{best.served:,.0f}/s = {ratio:.2f}x (>= 1.0x)"),
                  (g.hard_failures == 0, f"gateway failures {failures_text(g)} (only 503+RA)"),
                  (g.db_ok, "database checks " + ("pass" if g.db_ok else "FAIL"))]
        lines.append(_verdict(f"at {fraction}%", checks))
    return lines


def _verdict(label: str, checks: list[tuple[bool, str]]) -> str:
    verdict = "PASS" if all(ok for ok, _ in checks) else "MISS"
    return f"goal {label}: {verdict}: " + "; ".join(
        ("" if ok else "MISSED ") + text for ok, text in checks)


def write_charts(cells: list[Cell], paths: tuple[str, str], title: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no charts (pip install matplotlib)"
    swept = [c for c in cells if c.fraction is not None and c.latencies]
    colors = {"gateway": "tab:blue", "busy": "tab:orange", "retry": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in [b for b in BACKENDS if any(c.backend == b for c in swept)]:
        pts = sorted((c.fraction, c) for c in swept if c.backend == backend)
        xs = [f for f, _ in pts]
        color = colors.get(backend)
        ax.plot(xs, [c.p(0.99) for _, c in pts], marker="o", color=color,
                label=f"{backend} p99")
        ax.plot(xs, [c.p(0.50) for _, c in pts], marker=".", linestyle="--", color=color,
                label=f"{backend} p50")
    ax.set(xlabel="offered load, % of the gateway's measured capacity",
           ylabel="latency ms (log scale)", yscale="log", title="latency against offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.text(0.01, 0.01, title, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = 0.0
    for backend in [b for b in BACKENDS if any(c.backend == b for c in swept)]:
        pts = sorted((c.rate, c) for c in swept if c.backend == backend)
        ax.plot([r for r, _ in pts], [c.served for _, c in pts], marker="o",
                color=colors.get(backend), label=backend)
        top = max(top, *(r for r, _ in pts), *(c.served for _, c in pts))
    ax.plot([0, top], [0, top], linestyle=":", color="grey", label="served = offered")
    ax.set(xlabel="offered requests/s", ylabel="served requests/s (answered as expected)",
           title="served against offered")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, title, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return "charts: " + ", ".join(os.path.relpath(p, ROOT) for p in paths)
