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
``--keep DIR`` (keep each cell's database and logs).

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
runs through :mod:`benchmarks.demo_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apsw

from .harness import ROOT, percentile, print_table, workdir
from . import demo_app
from .demo_app import check_db, free_port, stop_app

BACKENDS = ("gateway", "busy", "retry")
FRACTIONS = (25, 50, 75, 90, 100, 120)
DEFAULT_CHARTS = (os.path.join(ROOT, "benchmarks", "load_sweep_latency.png"),
                  os.path.join(ROOT, "benchmarks", "load_sweep_served.png"))
CLOSED_LOOP_CLIENTS = 32  # capacity: enough connections to keep 10 server threads busy
MAX_IN_FLIGHT = 8000      # arrivals waiting at once before the generator gives up on one
READY_TIMEOUT_S = 30.0
TICKETS_WITHIN_S = 30.0  # after the load: every write-behind ticket must be done by then
APP_CPU, GENERATOR_CPU = 0, 1

# How a request carries the admin credential (admin actions: creating accounts with a
# balance, matches, closes).
def admin_headers(token: str) -> dict[str, str]:
    basic = base64.b64encode(f"admin:{token}".encode()).decode()
    return {"Authorization": f"Basic {basic}"}


# --- the request mix: ONE table ---------------------------------------------------------
# locustfile.py's mix as shares of the arrivals (its users' weights over their think
# times): page viewers 81%, bettors 15%, the admin 4%. A request's {placeholders} and
# body are filled from the cell's State; "correct answers" are the statuses that are not
# failures (410 cap reached, 409 match closed, 422 overdraft are the app's refusals).
MIX: tuple[tuple[str, float, str, str | None, bool, tuple[int, ...]], ...] = (
    # name         share  request                             body      admin  correct answers
    ("view",          44, "POST /api/pages/{page}/view",       "empty",  False, (200, 410)),
    ("view capped",    4, "POST /api/pages/capped/view",       "empty",  False, (200, 410)),
    ("page html",      8, "GET /pages/{page}",                 None,     False, (200,)),
    ("page read",     25, "GET /api/pages/{page}",             None,     False, (200,)),
    ("bet",            7, "POST /api/bets",                    "bet",    False, (201, 409, 422)),
    ("bet async",      5, "POST /api/bets?async=1",            "bet",    False, (202,)),
    ("balance",        3, "GET /api/accounts/{account}",       None,     False, (200,)),
    ("open match",   1.5, "POST /api/matches",                 "match",  False, (201,)),
    ("close match",    1, "POST /api/matches/{closing}/close", "winner", True,  (200, 409)),
    ("stats",          2, "GET /api/stats",                    None,     False, (200,)),
)
CAPPED = "capped"  # the page whose cap is reached halfway through a cell
HOT_PAGES = 5      # hot-0 .. hot-4, with a cap never reached
ACCOUNTS = 50
ACCOUNT_BALANCE = 10**6  # stakes are 1..100: an overdraft is possible, never reached
OPEN_MATCHES = 3


class State:
    """What the requests of one cell refer to: the generator's own bookkeeping.
    ``state[key]`` fills a request's {placeholder}; :meth:`body` makes its body."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.accounts: list[int] = []
        self.matches: list[int] = []  # open, oldest first
        self.closed: list[int] = []

    def __getitem__(self, key: str) -> object:
        if key == "page":  # skewed like locustfile.py: hot-0 gets about half the traffic
            return f"hot-{0 if self.rng.random() < 0.5 else self.rng.randrange(HOT_PAGES)}"
        if key == "account":
            return self.rng.choice(self.accounts)
        if key == "closing":
            # The oldest open match while more than OPEN_MATCHES are open; else one
            # closed already (409, a correct answer).
            if len(self.matches) > OPEN_MATCHES or not self.closed:
                self.closed.append(self.matches.pop(0))
            return self.closed[-1]
        raise KeyError(key)

    def body(self, kind: str | None) -> Any:
        if kind is None:
            return None
        if kind == "empty":
            return {}
        if kind == "bet":
            return {"account": self["account"], "match": self.rng.choice(self.matches),
                    "pick": self.rng.choice(("home", "draw", "away")),
                    "stake": self.rng.randint(1, 100)}
        if kind == "match":
            return {"name": f"m-{uuid.uuid4().hex[:12]}"}
        if kind == "winner":
            return {"winner": self.rng.choice(("home", "draw", "away"))}
        raise ValueError(f"no body kind {kind!r}")


# --- a small HTTP/1.1 client on asyncio streams -----------------------------------------

class HTTPError(Exception):
    """The connection failed or the answer was not HTTP."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """Keep-alive connections to one port; a request takes an idle one or opens one."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def request(self, method: str, path: str, body: Any = None, admin: bool = False,
                      sent: list[float] | None = None) -> Answer:
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if body is not None or method == "POST":
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        if admin:
            head += [f"{k}: {v}" for k, v in admin_headers(self.token).items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + data
        # A kept-alive connection the server closed meanwhile (its idle timeout) fails
        # before any answer: the server never read the request, so send it again, once,
        # on a new connection, as HTTP client libraries do.
        for reuse in (bool(self.idle), False):
            if reuse:
                reader, writer = self.idle.pop()
            else:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError as exc:
                    raise HTTPError(f"connect: {exc}") from None
                self.opened += 1
            keep = answered = False
            try:
                writer.write(raw)
                if sent is not None:
                    sent.append(time.monotonic())
                status_line = await reader.readline()
                answered = bool(status_line)
                if not answered:
                    raise HTTPError("connection closed before the answer")
                answer = await self._read(status_line, reader)
                keep = answer.headers.get("connection", "").lower() != "close"
                return answer
            except (OSError, asyncio.IncompleteReadError, ValueError, HTTPError) as exc:
                if reuse and not answered:
                    continue
                raise HTTPError(f"{type(exc).__name__}: {exc}") from None
            finally:
                if keep:
                    self.idle.append((reader, writer))
                else:  # also on a timeout (cancelled): the answer may still come
                    writer.close()
        raise AssertionError("unreachable: the second attempt returns or raises")

    @staticmethod
    async def _read(status_line: bytes, reader: asyncio.StreamReader) -> Answer:
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            headers["connection"] = "close"
        return Answer(status, headers, body)

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


def _well_formed(path: str, answer: Answer) -> bool:
    """The body the endpoint promises: JSON for /api (an object), HTML otherwise."""
    if path.startswith("/api/"):
        try:
            return isinstance(json.loads(answer.body), dict)
        except ValueError:
            return False
    return b"<h1>" in answer.body


# --- one cell ---------------------------------------------------------------------------

@dataclass
class Cell:
    backend: str
    fraction: float | None  # percent of capacity; None: the capacity measurement
    rate: float             # offered requests/s (closed loop: the served rate)
    seconds: float
    arrivals: int = 0
    not_sent: int = 0
    ok: int = 0
    in_window: int = 0  # answered as expected before the last arrival's due time
    latencies: list[float] = field(default_factory=list)  # ms, sorted
    send_lag_p99: float = 0.0  # ms: due time to the request written (connect included)
    gen_lag_p99: float = 0.0  # ms: due time to the generator starting the request
    failures: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    graceful: bool = True
    app_cpus: str = ""

    @property
    def served(self) -> float:
        return self.in_window / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) if self.latencies else float("nan")

    @property
    def hard_failures(self) -> int:
        """Failures other than 503 refusals that carry Retry-After."""
        return sum(n for kind, n in self.failures.items() if kind != "503+RA")

    @property
    def db_ok(self) -> bool:
        return self.error is None and not self.problems


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


async def _setup(client: Client, state: State, cap: int) -> None:
    """The pages (hot ones with a cap never reached, the capped one), accounts, matches."""
    async def expect(status: int, method: str, path: str, body: Any, admin: bool) -> Any:
        answer = await asyncio.wait_for(client.request(method, path, body, admin), 10.0)
        if answer.status != status:
            raise RuntimeError(f"setup {method} {path}: {answer.status} {answer.body[:120]!r}")
        return json.loads(answer.body)

    for i in range(HOT_PAGES):
        await expect(201, "POST", "/api/pages", {"name": f"hot-{i}", "cap": 10**9}, False)
    await expect(201, "POST", "/api/pages", {"name": CAPPED, "cap": cap}, False)
    for i in range(ACCOUNTS):
        body = await expect(201, "POST", "/api/accounts",
                            {"name": f"bettor-{i}", "balance": ACCOUNT_BALANCE}, True)
        state.accounts.append(body["id"])
    for i in range(OPEN_MATCHES + 3):
        body = await expect(201, "POST", "/api/matches", {"name": f"setup-{i}"}, False)
        state.matches.append(body["id"])


async def _drive(cell: Cell, port: int, token: str, timeout: float, seed: int,
                 closed_loop: int = 0) -> dict[str, Any]:
    """Setup, then the load (open loop at cell.rate, or ``closed_loop`` clients), then
    the tickets. Returns what the database check needs."""
    rng = random.Random(seed)
    state = State(rng)
    client = Client(port, token)
    share = sum(row[1] for row in MIX)
    capped_share = next(row[1] for row in MIX if row[0] == "view capped") / share
    cap = max(5, int(cell.rate * cell.seconds * capped_share / 2))  # reached halfway
    await _setup(client, state, cap)
    kinds = rng.choices(range(len(MIX)), weights=[row[1] for row in MIX],
                        k=max(1, int(cell.rate * cell.seconds)) if not closed_loop else 10**6)
    tickets: list[str] = []
    capped: Counter[int] = Counter()  # the capped page's answers by status
    lags: list[float] = []
    gen_lags: list[float] = []
    done: list[float] = []
    in_flight = 0

    async def one(kind: int, due: float) -> None:
        nonlocal in_flight
        name, _share, request, body_kind, admin, expected = MIX[kind]
        method, path = request.format_map(state).split(" ", 1)
        body = state.body(body_kind)
        gen_lags.append(time.monotonic() - due)
        sent: list[float] = []
        in_flight += 1
        try:
            answer = await asyncio.wait_for(client.request(method, path, body, admin, sent),
                                            timeout)
        except asyncio.TimeoutError:
            cell.failures["timeout"] += 1
            cell.latencies.append((time.monotonic() - due) * 1000)
            return
        except HTTPError:
            cell.failures["conn"] += 1
            cell.latencies.append((time.monotonic() - due) * 1000)
            return
        finally:
            in_flight -= 1
            if sent:
                lags.append(sent[0] - due)
        now = time.monotonic()
        cell.latencies.append((now - due) * 1000)
        if answer.status not in expected:
            retry_after = answer.status == 503 and "retry-after" in answer.headers
            cell.failures["503+RA" if retry_after else str(answer.status)] += 1
            return
        if not _well_formed(path, answer):
            cell.failures["body"] += 1
            return
        cell.ok += 1
        cell.by_kind[name] += 1
        done.append(now)
        if name == "view capped":
            capped[answer.status] += 1
        elif name == "bet async":
            tickets.append(json.loads(answer.body)["ticket"])
        elif name == "open match" and answer.status == 201:
            state.matches.append(json.loads(answer.body)["id"])

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.05
    if closed_loop:
        stop_at = start + cell.seconds
        order = iter(kinds)

        async def client_loop() -> None:
            while time.monotonic() < stop_at:  # bounded by the clock
                await one(next(order), time.monotonic())

        await asyncio.gather(*(client_loop() for _ in range(closed_loop)))
    else:
        for i, kind in enumerate(kinds):  # open loop: each arrival at its due time
            due = start + i / cell.rate
            delay = due - time.monotonic()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            cell.arrivals += 1
            if in_flight >= MAX_IN_FLIGHT:
                cell.not_sent += 1
                continue
            task = asyncio.create_task(one(kind, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout + 5)
    cell.in_window = sum(1 for t in done if t <= start + cell.seconds)
    if closed_loop:
        cell.rate = cell.served
    cell.latencies.sort()
    lags.sort()
    cell.send_lag_p99 = percentile(lags, 0.99) * 1000 if lags else 0.0
    gen_lags.sort()
    cell.gen_lag_p99 = percentile(gen_lags, 0.99) * 1000 if gen_lags else 0.0
    # Every write-behind ticket must end committed or refused (a 202 is never silence).
    await _check_tickets(client, tickets, cell, deadline=time.monotonic() + TICKETS_WITHIN_S)
    client.close()
    return {"cap": cap, "capped": capped}


async def _check_tickets(client: Client, tickets: list[str], cell: Cell,
                         deadline: float) -> None:
    """Read every ticket back (a few at a time) until committed or refused; one still
    pending at ``deadline``, or unreadable, is a failure of kind ``ticket``."""
    todo = list(tickets)

    async def reader() -> None:
        while todo:
            ticket, status = todo.pop(), "pending"
            while status == "pending" and time.monotonic() < deadline:  # bounded
                left = deadline - time.monotonic()
                with contextlib.suppress(HTTPError, asyncio.TimeoutError, ValueError):
                    answer = await asyncio.wait_for(
                        client.request("GET", f"/api/tickets/{ticket}"), max(0.1, left))
                    status = json.loads(answer.body).get("status", "?")
                if status == "pending":
                    await asyncio.sleep(0.05)
            if status not in ("committed", "refused"):
                cell.failures["ticket"] += 1

    await asyncio.gather(*(reader() for _ in range(8)))


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
             closed_loop: int = 0) -> Cell:
    """One fresh app on a fresh database under the load, stopped, then checked."""
    cell = Cell(backend, fraction, rate, seconds)
    os.makedirs(workdir, exist_ok=True)
    db_path = os.path.join(workdir, "app.db")
    token = uuid.uuid4().hex
    port = free_port()
    proc = None
    facts: dict[str, Any] = {}
    try:
        proc, cell.app_cpus = start_app(db_path, port, backend, workdir, token, app_cpu)
        facts = asyncio.run(_drive(cell, port, token, timeout, seed, closed_loop))
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
    return cell


# --- report -----------------------------------------------------------------------------

def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _failures(cell: Cell) -> str:
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
            row += [f"{c.served:,.0f}", _ms(c.p(0.99))]
        row += [" / ".join(_failures(c) for c in row_cells),
                "ok" if all(c.db_ok for c in row_cells) else "FAIL"]
        rows.append(row)
    print_table(head, rows, markdown)


def report(cells: list[Cell], markdown: bool) -> None:
    rows = []
    for c in cells:
        load = "closed loop" if c.fraction is None else f"{c.fraction:g}%"
        rows.append([c.backend, load, f"{c.rate:,.0f}", f"{c.served:,.0f}", _ms(c.p(0.50)),
                     _ms(c.p(0.95)), _ms(c.p(0.99)), _ms(c.latencies[-1] if c.latencies
                                                        else float("nan")),
                     _failures(c), "ok" if c.db_ok else "FAIL", _ms(c.gen_lag_p99),
                     _ms(c.send_lag_p99)])
    print_table(["backend", "load", "offered/s", "served/s", "p50 ms", "p95 ms", "p99 ms",
                 "max ms", "failures", "db checks", "gen lag p99", "send lag p99"], rows,
                markdown)
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
                   f"gateway failures {_failures(g)} (0)")]
        for o in others:
            ratio = o.p(0.99) / g.p(0.99) if g.p(0.99) > 0 else float("nan")
            checks.append((ratio >= 5, f"p99 {_ms(g.p(0.99))} ms vs {o.backend} "
                                       f"{_ms(o.p(0.99))} ms = 1/{ratio:.1f} (<= 1/5)"))
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
                  (g.hard_failures == 0, f"gateway failures {_failures(g)} (only 503+RA)"),
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
    with workdir(args.keep, "load_sweep-") as base:
        capacity = args.capacity
        if capacity is None:
            cell = run_cell("gateway", None, 0.0, args.seconds, os.path.join(base, "capacity"),
                            timeout=args.timeout, app_cpu=app_cpu,
                            closed_loop=CLOSED_LOOP_CLIENTS)
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
                                timeout=args.timeout, app_cpu=app_cpu)
                cells.append(cell)
                print(f"  ran {backend} at {fraction:g}%: offered {cell.rate:,.0f}/s, served "
                      f"{cell.served:,.0f}/s, p99 {_ms(cell.p(0.99))} ms, failures "
                      f"{_failures(cell)}", file=sys.stderr, flush=True)
    after = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"- load average after the run: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    app_cpus = sorted({c.app_cpus for c in cells})
    print(f"- pinning: the app on cpu {'/'.join(app_cpus)}, this load generator on cpu "
          f"{generator} (os.sched_setaffinity, every thread)")
    print(f"- capacity: {capacity:,.0f} req/s (gateway, closed loop, {CLOSED_LOOP_CLIENTS} "
          "connections)" if args.capacity is None else f"- capacity: {capacity:,.0f} req/s "
          "(given)")
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
