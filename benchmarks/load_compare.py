"""The demo app under Locust, on the gateway and on the old retry way,
over a short sweep of user counts (the goal is read at 50 users).

Run from the repository root (needs the ``load`` extra; the chart needs matplotlib)::

    .venv/bin/python benchmarks/load_compare.py --quick        # users 10,50, 10 s each
    .venv/bin/python benchmarks/load_compare.py --markdown     # users 10,25,50, 20 s each

Options: ``--users 10,25,50``, ``--seconds 20``, ``--backends gateway,retry``,
``--think 0`` (scales every think time of ``locustfile.py``: LOAD_THINK; the
default 0 saturates the server, which is where the two ways differ: with
``--think 0.1`` at 50 users neither is saturated and their req/s are equal),
``--markdown``, ``--chart PATH`` (default ``benchmarks/load_compare.png``),
``--no-chart``, ``--keep DIR`` (keep the databases and logs there).

For each backend in turn and each user count, a fresh cell: ``python -m benchmarks.demo_app
--port FREE --db FRESH --backend B`` as a child (its cwd a fresh directory, so
its backups land there), waited for until it answers (bounded); Locust headless
as another child (``locustfile.py``, ``--json-file``, ``--exit-code-on-error 0``:
failures are read from the JSON); then the app is stopped (SIGTERM, a bounded
wait, then SIGKILL), and the database checked with apsw (this process never
uses the stdlib ``sqlite3``; it opens the file only after the app has exited):

- every page's counter equals its logged views: ``pages.views == count(page_views)
  + sum(hourly_views.views)`` (the rollup job moves old rows into hourly counts);
- no negative balance;
- no bet on a closed match placed after its close: ``bets.placed_at <=
  matches.closed_at`` for closed and settled matches;
- ``PRAGMA quick_check`` is ``ok``.

Figures: requests/s is every request over the span from the first to the last
one; p50/p95/p99 (ms) are Locust's (response times rounded as Locust stores
them: to 10 ms above 100 ms, to 100 ms above 1 s), over every request but the
setup; failures are Locust's (an unexpected status, a wrong or malformed body,
a write-behind ticket still pending after 5 s). The goal is read at 50 users:
the gateway has 0 failures, more requests/s than retry, and a p99 at least 5x
lower (PASS/MISS). Exit status 1 if a database check fails, a cell cannot run,
or the gateway has any failure; a missed goal alone is reported, not an exit
status.

Importable (tests/test_load_smoke.py loads it by path): :func:`run_cell` and
the functions it uses. It never imports locust (which monkey-patches the process).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apsw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the harness beside it (tests load by path)

from harness import (  # noqa: E402
    csv_of,
    machine_lines,
    non_negative,
    percentile_of_counts,
    positive,
    print_header,
    print_table,
)

LOCUSTFILE = os.path.join(ROOT, "locustfile.py")
DEFAULT_CHART = os.path.join(ROOT, "benchmarks", "load_compare.png")
BACKENDS = ("gateway", "retry")
GOAL_USERS = 50
GOAL_P99_RATIO = 5.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOCUST_GRACE_S = 60.0  # Locust's own start-up and shutdown, beyond -t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The app's admin credential, shared by the app and Locust (admin actions need it).
ADMIN_TOKEN = os.environ.get("SQLITE_GATEWAY_ADMIN_TOKEN") or secrets.token_urlsafe(16)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, SQLITE_GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def locust_available(python: str = sys.executable) -> bool:
    """Whether ``import locust`` works in a child (never in this process)."""
    try:
        return subprocess.run([python, "-c", "import locust"], check=False, capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def backend_supported(python: str = sys.executable) -> bool:
    """Whether ``python -m benchmarks.demo_app`` has ``--backend``."""
    try:
        out = subprocess.run([python, "-m", "benchmarks.demo_app", "--backend", "gateway",
                              "--help"], check=False, capture_output=True,
                             text=True,
                             timeout=60, cwd=ROOT, env=child_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _get(port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def start_app(db_path: str, port: int, backend: str | None, workdir: str,
              log_path: str, ready_timeout: float = READY_TIMEOUT_S) -> subprocess.Popen[bytes]:
    """``python -m benchmarks.demo_app`` as a child, returned once it answers (bounded)."""
    cmd = [sys.executable, "-m", "benchmarks.demo_app", "--port", str(port), "--db", db_path]
    if backend is not None:
        cmd += ["--backend", backend]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=child_env(), stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:  # bounded
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}) before answering; "
                               f"see {log_path}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _get(port, "/api/stats") == 200:
                return proc
        time.sleep(0.1)
    stop_app(proc)
    raise RuntimeError(f"the app did not answer within {ready_timeout:.0f} s; see {log_path}")


def stop_app(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM (graceful: the gateway drains), a bounded wait, then SIGKILL.
    Returns whether it stopped gracefully."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return False


def run_locust(host: str, users: int, seconds: float, out_prefix: str, log_path: str,
               think: float = 1.0, spawn_rate: float | None = None) -> list[dict[str, Any]]:
    """Locust headless as a child; returns the entries of its ``--json-file``."""
    rate = spawn_rate if spawn_rate is not None else max(1.0, users / 2)
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless",
           "-u", str(users), "-r", f"{rate:g}", "-t", f"{max(1, round(seconds))}s",
           "--host", host, "--json-file", out_prefix, "--exit-code-on-error", "0",
           "--only-summary", "--loglevel", "WARNING"]
    with open(log_path, "ab") as log:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=child_env(LOAD_THINK=f"{think:g}"),
                              stdout=log, stderr=subprocess.STDOUT,
                              timeout=seconds + LOCUST_GRACE_S)
    if proc.returncode != 0:
        raise RuntimeError(f"locust exited {proc.returncode}; see {log_path}")
    with open(out_prefix + ".json", encoding="utf-8") as f:
        entries: list[dict[str, Any]] = json.load(f)
    return entries


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over Locust's JSON entries: requests, failures, req/s, p50/p95/p99 ms,
    and the request count per name."""
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    starts = [e["start_time"] for e in entries if e["num_requests"]]
    ends = [e["last_request_timestamp"] for e in entries if e.get("last_request_timestamp")]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    buckets: dict[int, int] = {}
    for e in entries:
        if "[setup]" in e["name"]:
            continue
        for value, count in e["response_times"].items():
            key = round(float(value))
            buckets[key] = buckets.get(key, 0) + count
    per_name: dict[str, int] = {}
    fails_by_name: dict[str, int] = {}
    for e in entries:
        per_name[e["name"]] = per_name.get(e["name"], 0) + e["num_requests"]
        if e["num_failures"]:
            fails_by_name[e["name"]] = fails_by_name.get(e["name"], 0) + e["num_failures"]
    return {"requests": requests, "failures": failures,
            "rps": requests / span if span > 0 else 0.0,
            "p50": percentile_of_counts(buckets, 0.50),
            "p95": percentile_of_counts(buckets, 0.95),
            "p99": percentile_of_counts(buckets, 0.99), "per_name": per_name,
            "failures_by_name": fails_by_name}


def check_db(path: str) -> list[str]:
    """The database's invariants, checked with apsw once the app has exited.
    Returns the problems found (empty: all good)."""
    problems: list[str] = []
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)  # RW: may recover the WAL
    try:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return list(conn.execute(sql))

        quick = rows("PRAGMA quick_check")
        if quick != [("ok",)]:
            problems.append(f"quick_check: {quick[:3]}")
        for name, views, logged in rows(
                "SELECT p.name, p.views,"
                " (SELECT count(*) FROM page_views v WHERE v.page = p.name)"
                " + (SELECT coalesce(sum(h.views), 0) FROM hourly_views h WHERE h.page = p.name)"
                " FROM pages p ORDER BY p.name"):
            if views != logged:
                problems.append(f"page {name!r}: views {views} != logged {logged}")
        over = rows("SELECT name, views, cap FROM pages WHERE views > cap")
        if over:
            problems.append(f"pages over their cap: {over[:3]}")
        negative = rows("SELECT id, balance FROM accounts WHERE balance < 0")
        if negative:
            problems.append(f"negative balances: {negative[:3]}")
        late = rows("SELECT b.id, b.match, b.placed_at - m.closed_at FROM bets b"
                    " JOIN matches m ON m.id = b.match"
                    " WHERE m.status IN ('closed', 'settled') AND b.placed_at > m.closed_at")
        if late:
            worst = max(r[2] for r in late)
            problems.append(f"{len(late)} bet(s) placed after their match closed "
                            f"(up to {worst * 1000:.1f} ms after), e.g. bet {late[0][0]}")
    finally:
        conn.close()
    return problems


@dataclass
class Cell:
    backend: str
    users: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    graceful: bool = True

    @property
    def db_ok(self) -> bool:
        return self.error is None and not self.problems


def run_cell(backend: str | None, users: int, seconds: float, workdir: str,
             think: float = 1.0) -> Cell:
    """One fresh app on a fresh database under Locust, stopped, then checked."""
    cell = Cell(backend or "gateway", users, seconds)
    os.makedirs(workdir, exist_ok=True)
    db_path = os.path.join(workdir, "app.db")
    port = free_port()
    proc = None
    try:
        proc = start_app(db_path, port, backend, workdir, os.path.join(workdir, "app.log"))
        entries = run_locust(f"http://127.0.0.1:{port}", users, seconds,
                             os.path.join(workdir, "locust"),
                             os.path.join(workdir, "locust.log"), think=think)
        cell.summary = summarize(entries)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        cell.error = f"{type(exc).__name__}: {exc}"
    finally:
        if proc is not None:
            cell.graceful = stop_app(proc)
    if os.path.exists(db_path):
        try:
            cell.problems = check_db(db_path)
        except apsw.Error as exc:
            cell.problems = [f"cannot check the database: {exc}"]
    elif cell.error is None:
        cell.error = "no database file"
    return cell


# --- report ---------------------------------------------------------------------------

def _fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"  # NaN -> "-"


def report(cells: list[Cell], markdown: bool) -> None:
    rows = []
    for c in cells:
        s = c.summary
        db = "ok" if c.db_ok else "FAIL"
        rows.append([c.backend, str(c.users), _fmt(s.get("rps", float("nan")), 1),
                     _fmt(s.get("p50", float("nan"))), _fmt(s.get("p95", float("nan"))),
                     _fmt(s.get("p99", float("nan"))), str(s.get("failures", "-")),
                     str(s.get("requests", "-")), db])
    print_table(["backend", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures",
                 "requests", "db checks"], rows, markdown, left=2)
    for c in cells:
        for problem in ([c.error] if c.error else []) + c.problems:
            print(f"- {c.backend} {c.users} users: {problem}")
        if c.summary.get("failures_by_name"):
            print(f"- {c.backend} {c.users} users: failures by request: "
                  f"{c.summary['failures_by_name']}")
        if not c.graceful:
            print(f"- {c.backend} {c.users} users: the app did not stop on SIGTERM (killed)")
    by = {(c.backend, c.users): c for c in cells}
    ratio_rows = []
    for users in sorted({c.users for c in cells}):
        g, r = by.get(("gateway", users)), by.get(("retry", users))
        if not (g and r and g.summary and r.summary):
            continue
        rps = g.summary["rps"] / r.summary["rps"] if r.summary["rps"] else float("nan")
        p99 = r.summary["p99"] / g.summary["p99"] if g.summary["p99"] else float("nan")
        ratio_rows.append([str(users), f"{_fmt(rps, 2)}x", f"{_fmt(p99, 1)}x"])
    if ratio_rows:
        print()
        print_table(["users", "req/s gateway÷retry", "p99 retry÷gateway"], ratio_rows, markdown,
                    left=0)


def goal(cells: list[Cell]) -> str:
    by = {(c.backend, c.users): c for c in cells}
    g, r = by.get(("gateway", GOAL_USERS)), by.get(("retry", GOAL_USERS))
    if not (g and r and g.summary and r.summary):
        return f"goal at {GOAL_USERS} users: not measured (needs both backends at {GOAL_USERS})"
    p99_ratio = r.summary["p99"] / g.summary["p99"] if g.summary["p99"] else float("inf")
    checks = [
        (g.summary["failures"] == 0, f"gateway failures {g.summary['failures']} (0)"),
        (g.summary["rps"] > r.summary["rps"],
         f"req/s {g.summary['rps']:.1f} vs retry {r.summary['rps']:.1f} (ahead)"),
        (p99_ratio >= GOAL_P99_RATIO,
         (f"p99 {_fmt(g.summary['p99'])} ms vs retry {_fmt(r.summary['p99'])} ms "
          f"= {p99_ratio:.1f}x (>= {GOAL_P99_RATIO:g}x)")),
    ]
    verdict = "PASS" if all(ok for ok, _ in checks) else "MISS"
    return (f"goal at {GOAL_USERS} users: {verdict}: "
            + "; ".join(("" if ok else "MISSED ") + text for ok, text in checks))


def write_chart(cells: list[Cell], path: str, title: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for backend in sorted({c.backend for c in cells}):
        pts = sorted((c.users, c.summary) for c in cells if c.backend == backend and c.summary)
        if not pts:
            continue
        xs = [u for u, _ in pts]
        ax1.plot(xs, [s["rps"] for _, s in pts], marker="o", label=backend)
        ax2.plot(xs, [s["p99"] for _, s in pts], marker="o", label=backend)
    ax1.set(xlabel="Locust users", ylabel="requests/s", title="throughput")
    ax2.set(xlabel="Locust users", ylabel="p99 ms (log)", title="p99 latency", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart: {os.path.relpath(path, ROOT)}"


# --- command line -----------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=csv_of(int), default=None, help="default 10,25,50")
    parser.add_argument("--seconds", type=positive, default=None, help="per cell, default 20")
    parser.add_argument("--backends", type=csv_of(str, BACKENDS), default=BACKENDS)
    parser.add_argument("--think", type=non_negative, default=0.0,
                        help="think-time scale for locustfile.py (LOAD_THINK); default 0: "
                             "no think time, the server saturated")
    parser.add_argument("--quick", action="store_true", help="users 10,50, 10 s per cell")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--chart", default=DEFAULT_CHART)
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--keep", help="keep each cell's database and logs under this dir")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = [10, GOAL_USERS] if args.quick else [10, 25, GOAL_USERS]
    if args.seconds is None:
        args.seconds = 10.0 if args.quick else 20.0
    if not 1 <= args.seconds <= 600 or not args.think <= 100 or max(args.users) > 1000:
        parser.error("--seconds must be 1..600, --think 0..100 and --users 1..1000")
    return args


@contextlib.contextmanager
def workdir(keep: str | None, prefix: str = "load_compare-") -> Iterator[str]:
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not locust_available():
        print("locust is not installed in this interpreter: pip install -e '.[load]'")
        return 1
    backends = args.backends
    supported = backend_supported()
    if not supported:
        print("note: `python -m webapp` has no --backend yet; running the default backend only")
        backends = ["gateway"]
    print_header(machine_lines(f"users {','.join(map(str, args.users))}, {args.seconds:g} s "
                               f"per cell, think x{args.think:g}, backends {','.join(backends)}"),
                 markdown=True)
    print()
    cells: list[Cell] = []
    with workdir(args.keep) as base:
        for backend in backends:
            for users in args.users:
                cell = run_cell(backend if supported else None, users, args.seconds,
                                os.path.join(base, f"{backend}-{users}"), think=args.think)
                cells.append(cell)
                s = cell.summary
                print(f"  ran {backend} x {users} users: "
                      + (f"{s['rps']:.1f} req/s, {s['failures']} failures" if s
                         else str(cell.error)), file=sys.stderr, flush=True)
    print()
    report(cells, args.markdown)
    print()
    print(goal(cells))
    if not args.no_chart:
        print(write_chart(cells, args.chart,
                          f"demo app under Locust, {args.seconds:g} s per point, "
                          f"think x{args.think:g}, {os.cpu_count()} cpus"))
    bad = [c for c in cells if not c.db_ok]
    gateway_failed = [c for c in cells if c.backend == "gateway"
                      and (not c.summary or c.summary["failures"])]
    return 1 if bad or gateway_failed else 0


if __name__ == "__main__":
    sys.exit(main())
