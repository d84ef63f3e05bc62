"""The demo app under an open-loop load: gateway, busy and retry at fractions of capacity.

This is the one load driver for the HTTP figures: the load table (served req/s and
p99 per backend and load) and the charts ``benchmarks/load_sweep_latency.png`` and
``benchmarks/load_sweep_served.png`` all come from it. ``locustfile.py`` is the
demo's load profile for a person watching the dashboard (Locust's closed loop of
users with think times); no figure comes from it, and :data:`MIX` below is its mix
as shares of the arrivals.

Run from the repository root (needs the ``web`` extra; the charts need matplotlib)::

    .venv/bin/python -m benchmarks.load_sweep                # 15 s per cell, 18 cells
    .venv/bin/python -m benchmarks.load_sweep --quick        # 5 s per cell
    .venv/bin/python -m benchmarks.load_sweep --markdown     # the table for README

Options: ``--seconds 15``, ``--fractions 25,50,75,90,100,120`` (percent of the
measured capacity), ``--backends gateway,busy,retry``, ``--capacity N`` (req/s:
skip the measurement), ``--timeout 5`` (the client gives up after this many
seconds: a failure of kind ``timeout``), ``--markdown``, ``--no-chart``,
``--keep DIR`` (keep each cell's database and logs), ``--no-wait-quiet``,
``--quiet-below 0.9``, ``--quiet-max-wait 90`` (before each cell, wait until the
1-minute load average is under 0.9, at most 90 s: see ``quiet.py``; each cell's
load before -> after is in the table, BUSY when it started at >= 1.0, and one
line says whether the run was quiet).

What it does, in one run:

1. The gateway's capacity: a fresh app under a closed loop (``CLOSED_LOOP_CLIENTS``
   connections, each sending its next request as soon as the last one is
   answered: the server is never idle) for ``--seconds``; capacity = the
   requests/s answered as expected.
2. For each fraction, each backend in turn: a fresh app on a fresh database
   (``python -m benchmarks.demo_app --backend B``, a child process), the setup requests
   (pages, accounts, matches), then ``fraction x capacity`` requests/s for
   ``--seconds``, then every write-behind ticket is read back until it is
   committed or refused, the app is stopped (SIGTERM: it drains) and its
   database checked.

Open loop: arrival ``i`` of a cell is due at ``start + i / rate`` (a fixed
rate), whatever happened to the earlier ones: the generator (asyncio, one
task per request, this process) sends each request at its due time on an idle
keep-alive connection or a new one, without waiting for any answer, so a slow
server gets more requests in flight, not fewer arrivals (a closed loop such as
Locust's users would slow down with the server and hide its queueing). Latency
is measured from the due time, not from the send, so a late send cannot hide
waiting. An arrival counts as the generator's fault (``not sent``, reported
apart) only if it could not be sent at all: ``MAX_IN_FLIGHT`` requests were
already waiting. ``gen lag`` (p99 of due time to the generator starting the
request) shows whether the generator kept up; ``send lag`` (to the request's
bytes written) adds the wait for a new connection the server has not accepted
yet. A kept-alive connection that the server closed while idle is retried once
on a new one (the server never read the request), as HTTP libraries do.

Pinning (2 cores): the app (every thread of its process) runs on one core and
this generator on the other (``os.sched_setaffinity``), so the load generator
does not take the server's CPU; the table's header says which cores, and the
load average before the run (the machine may be shared).

Per cell: offered and served requests/s (answered as expected while the load
lasted: answers that came after the cell's last due time are not counted, so
a backlog left to drain does not count as served), latency p50/p95/p99/max in ms
over every arrival (a timeout counts as the time until the client gave up: a
lower bound),
failures by kind (``timeout``, ``503+RA`` = 503 with Retry-After, a refusal
the client may retry; ``503``; another status such as ``500``; ``conn`` = the
connection failed; ``body`` = not the answer the endpoint promises; ``ticket``
= a write-behind bet neither committed nor refused), and the database checks:
every page's count equals its logged views and the capped page stopped
exactly at its cap (it is reached halfway through the cell), no negative
balance, no bet placed after its match closed, ``PRAGMA quick_check``.

Goals (printed PASS/MISS): at 75% and 90% of capacity the gateway has 0
failures and a p99 at most 1/5 of busy's and of retry's; at 100% and 120% it
serves at least as many requests/s as the best other backend, with no failure
but 503 refusals that carry Retry-After, and every database check passes.
Exit status 1 if a database check fails or a cell cannot run; a missed goal
alone is reported, not an exit status.

Importable (tests/test_load_sweep_smoke.py imports it): :func:`run_cell`; the app
runs through :mod:`benchmarks.demo_app`, the generator is ``open_loop.py`` (over
``http_client.py``), the tables, goals and charts are ``load_report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import apsw

from . import demo_app
from .demo_app import check_db, free_port, stop_app
from .harness import ROOT, workdir
from .http_client import HTTPError
from .load_report import BACKENDS, failures_text, goals, headline, ms, report, write_charts
from .open_loop import CAPPED, Cell, drive
from .quiet import QuietWait, add_quiet_options, cell_load, load_text, quiet_line, quiet_wait

FRACTIONS = (25, 50, 75, 90, 100, 120)
DEFAULT_CHARTS = (os.path.join(ROOT, "benchmarks", "load_sweep_latency.png"),
                  os.path.join(ROOT, "benchmarks", "load_sweep_served.png"))
CLOSED_LOOP_CLIENTS = 32  # capacity: enough connections to keep 10 server threads busy
READY_TIMEOUT_S = 30.0
APP_CPU, GENERATOR_CPU = 0, 1

# --- one cell ---------------------------------------------------------------------------

def _pin_all_threads(pid: int, cpu: int) -> str:
    """Pin every thread of ``pid`` (all of /proc/pid/task) to ``cpu``; return the
    affinity read back, or why not."""
    if not hasattr(os, "sched_setaffinity") or cpu >= (os.cpu_count() or 1):
        return "not pinned"
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), {cpu})
        return ",".join(map(str, sorted(os.sched_getaffinity(pid))))
    except OSError as exc:
        return f"not pinned ({exc})"


def start_app(db_path: str, port: int, backend: str, workdir: str, token: str,
              app_cpu: int | None) -> tuple[Any, str]:
    """The demo app on ``backend`` (:func:`benchmarks.demo_app.start_app`), every thread
    of it then pinned to ``app_cpu``; returns the process and the affinity read back."""
    proc = demo_app.start_app(db_path, port, backend, workdir, token)
    pinned = _pin_all_threads(proc.pid, app_cpu) if app_cpu is not None else "not pinned"
    return proc, pinned


def check_cap(db_path: str, cap: int, seen: Counter[int], unknown: int) -> list[str]:
    """The capped page's count is exact: never past its cap, at it once the client
    was told 410, and equal to the views the client was told were counted (up to
    ``unknown`` views whose answer never came: a timeout may have been counted)."""
    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT views FROM pages WHERE name = ?", (CAPPED,)).fetchall()
    finally:
        conn.close()
    if not rows:
        return [f"page {CAPPED!r} missing"]
    views, problems = rows[0][0], []
    if views > cap or (seen[410] and views != cap):
        problems.append(f"capped page: {views} views, cap {cap}, {seen[410]} answers 410 "
                        "(must stop exactly at the cap)")
    if not seen[200] <= views <= seen[200] + unknown:
        problems.append(f"capped page: {views} views in the database, the client was told "
                        f"{seen[200]} were counted ({unknown} answers lost)")
    return problems


def run_cell(backend: str, fraction: float | None, rate: float, seconds: float, workdir: str,
             *, timeout: float = 5.0, seed: int = 1, app_cpu: int | None = None,
             closed_loop: int = 0, quiet: QuietWait | None = None) -> Cell:
    """One fresh app on a fresh database under the load, stopped, then checked; with
    ``quiet``, it first waits for a quiet machine. ``cell.load``: the load average
    before the app started and after it stopped (:func:`benchmarks.quiet.cell_load`)."""
    cell = Cell(backend, fraction, rate, seconds)
    with cell_load(quiet) as cell.load:
        _run(cell, workdir, timeout, seed, app_cpu, closed_loop)
    return cell


def _run(cell: Cell, workdir: str, timeout: float, seed: int, app_cpu: int | None,
         closed_loop: int) -> None:
    """run_cell's work: the app started, driven, stopped; its database checked."""
    os.makedirs(workdir, exist_ok=True)
    db_path = os.path.join(workdir, "app.db")
    token = uuid.uuid4().hex
    port = free_port()
    proc = None
    facts: dict[str, Any] = {}
    try:
        proc, cell.app_cpus = start_app(db_path, port, cell.backend, workdir, token, app_cpu)
        facts = asyncio.run(drive(cell, port, token, timeout, seed, closed_loop))
    except (RuntimeError, OSError, ValueError, KeyError, HTTPError,
            asyncio.TimeoutError) as exc:
        cell.error = f"{type(exc).__name__}: {exc}"
    finally:
        if proc is not None:
            cell.graceful = stop_app(proc)
    if os.path.exists(db_path):
        try:
            cell.problems = check_db(db_path)
            if facts:
                cell.problems += check_cap(db_path, facts["cap"], facts["capped"],
                                           cell.failures["timeout"] + cell.failures["conn"])
        except apsw.Error as exc:
            cell.problems.append(f"cannot check the database: {exc}")
    elif cell.error is None:
        cell.error = "no database file"


# --- command line -----------------------------------------------------------------------

def _csv(kind: Callable[[str], Any], allowed: Callable[[Any], bool]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        if not values or not all(allowed(v) for v in values):
            raise argparse.ArgumentTypeError(f"out of range: {text!r}")
        return values
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="per cell, default 15")
    parser.add_argument("--fractions", type=_csv(float, lambda v: 0 < v <= 1000),
                        default=list(FRACTIONS), help="percent of capacity")
    parser.add_argument("--backends", type=_csv(str, lambda v: v in BACKENDS),
                        default=list(BACKENDS))
    parser.add_argument("--capacity", type=float, help="req/s; skip the measurement")
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout, s")
    parser.add_argument("--quick", action="store_true", help="5 s per cell")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--keep", help="keep each cell's database and logs under this dir")
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 15.0
    if not 1 <= args.seconds <= 600 or not 0.1 <= args.timeout <= 60:
        parser.error("--seconds must be 1..600 and --timeout 0.1..60")
    if args.capacity is not None and not 1 <= args.capacity <= 10**6:
        parser.error("--capacity must be 1..1e6 req/s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    two_cores = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    app_cpu = APP_CPU if two_cores else None
    generator = _pin_all_threads(os.getpid(), GENERATOR_CPU) if two_cores else "not pinned"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"- python: {platform.python_implementation()} {platform.python_version()}; "
          f"apsw {apsw.apswversion()}, SQLite {apsw.sqlite_lib_version()}")
    print(f"- cpus: {os.cpu_count()}; load average before the run: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"- settings: {args.seconds:g} s per cell, client timeout {args.timeout:g} s, "
          f"fractions {','.join(f'{f:g}' for f in args.fractions)}%, "
          f"backends {','.join(args.backends)}")
    cells: list[Cell] = []
    quiet = quiet_wait(args)
    with workdir(args.keep, "load_sweep-") as base:
        capacity = args.capacity
        if capacity is None:
            cell = run_cell("gateway", None, 0.0, args.seconds, os.path.join(base, "capacity"),
                            timeout=args.timeout, app_cpu=app_cpu,
                            closed_loop=CLOSED_LOOP_CLIENTS, quiet=quiet)
            cells.append(cell)
            capacity = cell.served
            print(f"  capacity (gateway, closed loop, {CLOSED_LOOP_CLIENTS} connections): "
                  f"{capacity:,.0f} req/s", file=sys.stderr, flush=True)
            if not capacity or cell.error:
                print(f"cannot measure the capacity: {cell.error or 'nothing served'}")
                return 1
        # Fraction by fraction, each backend in turn: the cells compared with each
        # other run close together in time, should the machine's load drift.
        for fraction in args.fractions:
            for backend in args.backends:
                cell = run_cell(backend, fraction, capacity * fraction / 100, args.seconds,
                                os.path.join(base, f"{backend}-{fraction:g}"),
                                timeout=args.timeout, app_cpu=app_cpu, quiet=quiet)
                cells.append(cell)
                print(f"  ran {backend} at {fraction:g}%: offered {cell.rate:,.0f}/s, served "
                      f"{cell.served:,.0f}/s, p99 {ms(cell.p(0.99))} ms, failures "
                      f"{failures_text(cell)}, load {load_text(cell.load)}", file=sys.stderr,
                      flush=True)
    after = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"- load average after the run: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    app_cpus = sorted({c.app_cpus for c in cells})
    print(f"- pinning: the app on cpu {'/'.join(app_cpus)}, this load generator on cpu "
          f"{generator} (os.sched_setaffinity, every thread)")
    print(f"- capacity: {capacity:,.0f} req/s (gateway, closed loop, {CLOSED_LOOP_CLIENTS} "
          "connections)" if args.capacity is None else f"- capacity: {capacity:,.0f} req/s "
          "(given)")
    print(quiet_line([c.load for c in cells]))
    print(quiet.line())
    print()
    report(cells, args.markdown)
    print()
    headline(cells, args.markdown)
    print()
    for line in goals(cells):
        print(line)
    if not args.no_chart:
        print(write_charts(cells, DEFAULT_CHARTS,
                           f"open loop, {args.seconds:g} s per point, capacity "
                           f"{capacity:,.0f} req/s, app and generator pinned to one core each "
                           f"of {os.cpu_count()}"))
    return 1 if any(not c.db_ok for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
