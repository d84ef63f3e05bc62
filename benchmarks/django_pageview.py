"""The page-view transaction as a Django ORM function: stock sqlite3 backend vs the gateway.

Run from the checkout: ``python -m benchmarks.django_pageview`` (``--smoke`` for a
seconds-long check, ``--threads 1,8,32 --seconds 5`` by default).

The function is the example project's ``record_view`` (examples/django_counter):
in ``transaction.atomic()``, ``get_or_create`` the page, add one to its count in
Python and ``save()`` it, and log the view (``View.objects.create``). Three ways,
each cell in a fresh process, synchronous FULL everywhere:

- ``stock``: ``django.db.backends.sqlite3`` with the best-known settings: WAL
  (``init_command``), ``OPTIONS["transaction_mode"] = "IMMEDIATE"`` and a 5 s
  ``timeout``; one SQLite connection per thread, each commit its own fsync;
- ``gateway``: the same code, ENGINE ``sqlite_gateway.integrations.django``;
- ``gateway-fn``: the same function wrapped in ``on_writer`` (one group-committed
  unit on the writer).

After each cell the parent checks the file: the page counts sum to the logged
views, and the log holds one row per call answered as done. Goal lines at the
most threads: gateway-fn >= 2x stock; gateway >= 1x stock with p99 <= 1/2 of
stock's; 0 "database is locked", 0 starved threads in the gateway's cells (stock's
are shown as info). Each cell first waits until the 1-minute load average is
under 0.9 (at most 90 s; ``--no-wait-quiet``, ``--quiet-below``,
``--quiet-max-wait``: see ``quiet.py``); its load before -> after is in the
table (BUSY when it started at >= 1.0), and one line says whether the run was
quiet.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .harness import (Progress, child_cell, csv_of, machine_lines, positive, print_header,
                      print_table, ratio, run_child)
from .quiet import add_quiet_options, load_of_runs, load_text, quiet_line, quiet_wait

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "django_counter"
# The example project's app, imported from the checkout (its label stays "counter").
APP = "examples.django_counter.counter"

WAYS = ("stock", "gateway", "gateway-fn")
PAGES = tuple(f"p{i}" for i in range(10))


def database(way: str, path: str) -> dict[str, Any]:
    """The DATABASES entry of one way."""
    if way == "stock":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 5,
                            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL"}}
    return {"ENGINE": "sqlite_gateway.integrations.django", "NAME": path,
            "OPTIONS": {"synchronous": "FULL"}}


def setup_django(way: str, path: str) -> None:
    """Configure Django for this process (the example's app), migrate, make the pages."""
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": database(way, path)}, INSTALLED_APPS=[APP],
                       USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from examples.django_counter.counter.models import Page

    Page.objects.bulk_create([Page(name=name) for name in PAGES])


def strategy(way: str, path: str) -> Any:
    """The cell's strategy (see workloads.run_cell): Django's ORM from every thread."""
    from .strategies import Strategy

    class DjangoWay(Strategy):
        workloads = ("pageview-fn",)

        def __init__(self) -> None:
            super().__init__(path, "FULL")
            from examples.django_counter.counter.views import record_view

            self.record = record_view
            if way == "gateway-fn":
                from sqlite_gateway.integrations.django import on_writer

                self.record = on_writer(record_view)
            self.locked = 0  # "database is locked" errors seen

        def enter_thread(self) -> None:
            from django.db import connection

            connection.ensure_connection()

        def write_fn(self, page: str, ts: float) -> None:
            try:
                self.record(page, ts)
            except Exception as exc:
                self.locked += "database is locked" in str(exc)
                raise

        def finish(self) -> None: ...

        def close(self) -> None:
            from django.db import connections

            connections.close_all()

        def figures(self) -> dict[str, Any]:
            return {"locked": self.locked}

    return DjangoWay()


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: one way, one thread count."""
    from .workloads import run_cell as run_callers

    setup_django(spec["way"], spec["path"])
    return run_callers(strategy(spec["way"], spec["path"]), "pageview-fn", spec["threads"],
                       spec["seconds"])


def check(path: str, writes: int) -> bool:
    """In the parent (apsw, read-only): counts sum to the log, one row per answer."""
    import apsw

    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        total = conn.execute("SELECT sum(views) FROM counter_page").fetchall()[0][0]
        rows = conn.execute("SELECT count(*) FROM counter_view").fetchall()[0][0]
    finally:
        conn.close()
    return bool(total == rows == writes)


def median_run(cell_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ops/s, with every run's ops/s, the sums of locked errors
    and starved threads, and correct only if every run was."""
    failed = [c for c in cell_runs if "child_failed" in c]
    if failed:
        return failed[0]
    ordered = sorted(cell_runs, key=lambda c: c["ops_per_s"])
    cell = dict(ordered[(len(ordered) - 1) // 2])
    cell["runs"] = [c["ops_per_s"] for c in cell_runs]
    cell["locked"] = sum(c["locked"] for c in cell_runs)
    cell["starved"] = sum(c["starved"] for c in cell_runs)
    cell["correct"] = all(c.get("correct") for c in cell_runs)
    cell.update(load_of_runs(cell_runs))
    return cell


def goal_lines(cells: dict[tuple[str, int], dict[str, Any]], threads: int) -> list[str]:
    """PASS/MISS lines at ``threads`` (every goal uses cells of this one run)."""
    stock, plain, fn = (cells.get((way, threads)) for way in WAYS)
    where = f"x{threads}"
    if not (stock and plain and fn) or any("child_failed" in c for c in (stock, plain, fn)):
        return [f"MISS {where}: a cell failed, no ratios"]
    out = []
    r_fn = ratio(fn["ops_per_s"], stock["ops_per_s"])
    out.append(f"{'PASS' if r_fn >= 2 else 'MISS'} {where}: gateway-fn / stock = {r_fn:.2f}x "
               f"(goal >= 2x; {fn['ops_per_s']:,.0f} vs {stock['ops_per_s']:,.0f} ops/s)")
    r_plain = ratio(plain["ops_per_s"], stock["ops_per_s"])
    p99 = ratio(plain["p99_ms"], stock["p99_ms"])
    out.append(f"{'PASS' if r_plain >= 1 and p99 <= 0.5 else 'MISS'} {where}: gateway / stock "
               f"= {r_plain:.2f}x, p99 {plain['p99_ms']:.1f} vs {stock['p99_ms']:.1f} ms = "
               f"{p99:.2f}x (goal >= 1x, p99 <= 0.5x)")
    for way, cell in zip(WAYS, (stock, plain, fn), strict=True):
        bad = cell["locked"] or cell["starved"] or not cell["correct"]
        verdict = "info" if way == "stock" else "MISS" if bad else "PASS"
        out.append(f"{verdict} {where}: {way}: {cell['locked']} 'database is "
                   f"locked', {cell['starved']} starved threads, file check "
                   f"{'ok' if cell['correct'] else 'FAILED'} (goal 0, 0, ok)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=csv_of(int), default=(1, 8, 32))
    parser.add_argument("--seconds", type=positive, default=5.0)
    parser.add_argument("--ways", type=csv_of(str, WAYS), default=WAYS)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each cell, round-robin; the median run is shown")
    parser.add_argument("--smoke", action="store_true",
                        help="1 and 4 threads, 0.5 s each, one run")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        return child_cell(args.cell, run_cell)
    threads, seconds = ((1, 4), 0.5) if args.smoke else (args.threads, args.seconds)
    repeat = 1 if args.smoke else max(1, args.repeat)
    load_before = os.getloadavg()[0]
    quiet = quiet_wait(args)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    progress = Progress(len(threads) * len(args.ways) * repeat)
    with tempfile.TemporaryDirectory(prefix="django-pageview-") as temp:
        for rep in range(repeat):  # round-robin: a change in the machine's load hits every way
            for n in threads:
                for way in args.ways:
                    path = os.path.join(temp, f"{way}-{n}-{rep}.sqlite3")
                    progress.begin(f"{way} x{n}")
                    cell = run_child(__spec__.name, {"way": way, "threads": n, "seconds": seconds,
                                                "path": path}, limit=120 + 4 * seconds,
                                     tick=progress.tick, quiet=quiet)
                    if "child_failed" not in cell:
                        cell["correct"] = check(path, cell["writes"])
                    runs.setdefault((way, n), []).append(cell)
                    progress.end(f"{way} x{n}: {cell.get('ops_per_s', 0):,.0f} ops/s, "
                                 f"load {load_text(cell)}")
    progress.close()
    cells = {key: median_run(cell_runs) for key, cell_runs in runs.items()}
    print_header(machine_lines("synchronous FULL; stock: WAL, transaction_mode IMMEDIATE, "
                               "timeout 5 s", django=_django_version(),
                               **{"load average before": f"{load_before:.2f}"}),
                 args.markdown)
    rows = []
    for (way, n), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], WAYS.index(kv[0][0]))):
        if "child_failed" in cell:
            rows.append((way, n, "failed: " + cell["child_failed"], *("",) * 8))
            continue
        rows.append((way, n, f"{cell['ops_per_s']:,.0f}",
                     "/".join(f"{x:,.0f}" for x in cell["runs"]), f"{cell['p50_ms']:.2f}",
                     f"{cell['p99_ms']:.2f}", f"{cell['max_ms']:.1f}", cell["errors"],
                     cell["locked"], cell["starved"], load_text(cell)))
    print(quiet_line(list(cells.values())))
    print(quiet.line())
    print_table(("way", "threads", "ops/s", "runs", "p50 ms", "p99 ms", "max ms", "errors",
                 "locked", "starved", "load"), rows, args.markdown, left=2)
    print(f"load average after: {os.getloadavg()[0]:.2f}; each row: the median of {repeat} "
          "run(s) (ops/s of every run beside it); locked and starved: summed over the runs")
    if set(args.ways) == set(WAYS):
        for line in goal_lines(cells, max(threads)):
            print(line)
    return 0 if all("child_failed" not in c and c.get("correct") for c in cells.values()) else 1


def _django_version() -> str:
    import django

    return django.__version__


if __name__ == "__main__":
    sys.exit(main())
