"""The load sweep's open-loop generator: the request mix, one cell's figures, the drive.

:data:`MIX` is ``locustfile.py``'s mix as shares of the arrivals. :func:`drive`
sets up a fresh demo app (pages, accounts, matches), then sends arrival ``i`` at
``start + i / rate`` whatever happened to the earlier ones (or runs a closed loop
of clients, to measure the capacity), records each answer in a :class:`Cell`,
and reads every write-behind ticket back. Why an open loop, and what each
figure means: ``benchmarks/load_sweep.py``'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .harness import percentile
from .http_client import Client, HTTPError, well_formed

MAX_IN_FLIGHT = 8000      # arrivals waiting at once before the generator gives up on one
TICKETS_WITHIN_S = 30.0  # after the load: every write-behind ticket must be done by then


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
    load: dict[str, Any] = field(default_factory=dict)  # load average before/after (quiet.py)

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


async def setup(client: Client, state: State, cap: int) -> None:
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


async def drive(cell: Cell, port: int, token: str, timeout: float, seed: int,
                 closed_loop: int = 0) -> dict[str, Any]:
    """Setup, then the load (open loop at cell.rate, or ``closed_loop`` clients), then
    the tickets. Returns what the database check needs."""
    rng = random.Random(seed)
    state = State(rng)
    client = Client(port, token)
    share = sum(row[1] for row in MIX)
    capped_share = next(row[1] for row in MIX if row[0] == "view capped") / share
    cap = max(5, int(cell.rate * cell.seconds * capped_share / 2))  # reached halfway
    await setup(client, state, cap)
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
        if not well_formed(path, answer):
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
    await check_tickets(client, tickets, cell, deadline=time.monotonic() + TICKETS_WITHIN_S)
    client.close()
    return {"cap": cap, "capped": capped}


async def check_tickets(client: Client, tickets: list[str], cell: Cell,
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
