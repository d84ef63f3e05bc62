"""Locust traffic for the demo app (``python -m webapp``): page views, bets, an admin.

The demo's load profile, for a person watching the dashboard under a realistic mix
(Locust's web UI, or headless). No published figure comes from it: the HTTP figures
come from the open-loop driver ``python -m benchmarks.load_sweep``, whose request
mix is this one as shares of the arrivals. tests/test_load_smoke.py runs it
headless against the app so that it keeps matching the app's API::

    locust -f locustfile.py --headless -u 50 -r 10 -t 30s \\
        --host http://127.0.0.1:8080 --csv out

Three user classes, weighted like real traffic:

- ``PageViewer`` (weight 8): views of a few hot pages (``POST /api/pages/<name>/view``,
  ``GET /pages/<name>``) and reads (``GET /api/pages/<name>``);
- ``Bettor`` (weight 3): opens its account on start, bets synchronously (201) and
  write-behind (``?async=1``: 202, then polls the ticket, bounded, until it is committed
  or refused), reads its balance;
- ``Admin`` (weight 1): now and then opens a match and closes an older one, reads
  ``/api/stats``.

The admin actions (creating an account with a balance, closing a match) take HTTP Basic
auth with the app's admin token: set ``SQLITE_GATEWAY_ADMIN_TOKEN`` for both the app and
Locust (tests/test_load_smoke.py does). Every POST sends JSON.

The app's refusals are correct answers, not failures: 410 (cap reached), 409 (match
closed), 422 (overdraft). A failure is any other status (a 500, a timeout) or a body
that is not the JSON the endpoint promises.

Setup (``events.test_start``, and lazily by the first user if that did not run, e.g.
on a worker): the hot pages with a huge cap, and a few open matches.

``LOAD_THINK`` (env, default 1.0) scales every think time: 0.1 makes the same mix ten
times denser.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, events, task

HOT_PAGES = [f"hot-{i}" for i in range(5)]
PAGE_CAP = 10**9          # never reached in a run: a 410 would still be a correct answer
OPEN_MATCHES_TARGET = 3   # the admin keeps about this many matches open
ACCOUNT_BALANCE = 10**6   # stakes are 1..100: an overdraft (422) is possible but rare
TICKET_POLLS = 50         # write-behind: at most this many polls of a ticket ...
TICKET_POLL_S = 0.1       # ... this far apart (5 s), then the bet counts as a failure
THINK = float(os.environ.get("LOAD_THINK", "1.0"))
_TOKEN = os.environ.get("SQLITE_GATEWAY_ADMIN_TOKEN", "")
ADMIN = {"Authorization": "Basic " + base64.b64encode(f"admin:{_TOKEN}".encode()).decode()}

# Matches open for betting (ids), shared by the users of this process.
open_matches: list[int] = []
_setup_lock = threading.Lock()  # gevent patches it: a greenlet lock
_setup_done = False


def _think(low: float, high: float) -> Any:
    return between(low * THINK, high * THINK)


def _json(resp: Any) -> Any:
    """The body as JSON, or mark the response failed and return None."""
    try:
        return resp.json()
    except (ValueError, TypeError) as exc:
        resp.failure(f"malformed JSON ({type(exc).__name__}): {resp.text[:80]!r}")
        return None


def _body(resp: Any, status: int) -> Any:
    """The JSON body of a ``status`` answer, or mark the response failed and return None."""
    if resp.status_code != status:
        resp.failure(f"status {resp.status_code}: {resp.text[:80]!r}")
        return None
    return _json(resp)


def _check_error(resp: Any, expected: tuple[int, ...]) -> None:
    """A refusal the app documents: the status must be one of ``expected`` and the
    body the app's JSON error (``{"error": ..., "status": code}``)."""
    if resp.status_code not in expected:
        resp.failure(f"unexpected status {resp.status_code}: {resp.text[:80]!r}")
        return
    body = _json(resp)
    if body is not None and not isinstance(body, dict):
        resp.failure(f"error body is not an object: {resp.text[:80]!r}")
    elif body is not None and "error" not in body:
        resp.failure(f"error body without 'error': {resp.text[:80]!r}")
    else:
        resp.success()


def _setup(client: Any) -> None:
    """Create the hot pages (409 if they exist: fine) and a few open matches."""
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return
        for page in HOT_PAGES:
            with client.post("/api/pages", json={"name": page, "cap": PAGE_CAP},
                             name="/api/pages [setup]", catch_response=True) as resp:
                if resp.status_code in (201, 409):
                    resp.success()
                else:
                    resp.failure(f"page setup: {resp.status_code} {resp.text[:80]!r}")
        for i in range(OPEN_MATCHES_TARGET):
            with client.post("/api/matches", json={"name": f"setup-{i}"},
                             name="/api/matches [setup]", catch_response=True) as resp:
                body = _json(resp) if resp.status_code == 201 else None
                if isinstance(body, dict) and isinstance(body.get("id"), int):
                    open_matches.append(body["id"])
                    resp.success()
                elif resp.status_code != 201:
                    resp.failure(f"match setup: {resp.status_code} {resp.text[:80]!r}")
        _setup_done = True


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    global _setup_done
    open_matches.clear()
    _setup_done = False
    if environment.host is None:
        return  # the first user sets up lazily
    from locust.contrib.fasthttp import FastHttpSession

    session = FastHttpSession(base_url=environment.host,
                              request_event=environment.events.request, user=None)
    _setup(session)


class _Base(FastHttpUser):
    abstract = True
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        if not _setup_done:
            _setup(self.client)


class PageViewer(_Base):
    """Most of the traffic: views of a few hot pages, and reads."""

    weight = 8
    wait_time = _think(0.2, 1.0)

    def _page(self) -> str:
        # Skewed: hot-0 gets about half the views.
        return HOT_PAGES[0] if random.random() < 0.5 else random.choice(HOT_PAGES)

    @task(6)
    def view(self) -> None:
        page = self._page()
        with self.client.post(f"/api/pages/{page}/view", name="/api/pages/[name]/view",
                              json={}, catch_response=True) as resp:
            if resp.status_code == 200:
                body = _json(resp)
                if body is None:
                    return
                if (not isinstance(body.get("views"), int) or body.get("cap") != PAGE_CAP
                        or not 0 < body["views"] <= PAGE_CAP):
                    resp.failure(f"wrong view body: {resp.text[:80]!r}")
                else:
                    resp.success()
            else:
                _check_error(resp, (410,))

    @task(1)
    def html_page(self) -> None:
        """The page a browser shows (it counts no view: its script posts one)."""
        page = self._page()
        with self.client.get(f"/pages/{page}", name="/pages/[name]",
                             catch_response=True) as resp:
            if resp.status_code == 200 and f"<h1>{page}</h1>" in resp.text:
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}: {resp.text[:80]!r}")

    @task(3)
    def show(self) -> None:
        page = self._page()
        with self.client.get(f"/api/pages/{page}", name="/api/pages/[name]",
                             catch_response=True) as resp:
            body = _body(resp, 200)
            if body is None:
                return
            if body.get("name") != page or not isinstance(body.get("views"), int):
                resp.failure(f"wrong page body: {resp.text[:80]!r}")
            else:
                resp.success()


class Bettor(_Base):
    """Opens an account, bets (synchronous and write-behind), reads its balance."""

    weight = 3
    wait_time = _think(0.5, 2.0)
    account: int | None = None

    def on_start(self) -> None:
        super().on_start()
        name = f"bettor-{uuid.uuid4().hex[:16]}"
        with self.client.post("/api/accounts", json={"name": name, "balance": ACCOUNT_BALANCE},
                              headers=ADMIN, name="/api/accounts", catch_response=True) as resp:
            body = _json(resp) if resp.status_code == 201 else None
            if isinstance(body, dict) and isinstance(body.get("id"), int):
                self.account = body["id"]
                resp.success()
            elif resp.status_code != 201:
                resp.failure(f"status {resp.status_code}: {resp.text[:80]!r}")

    def _bet(self) -> dict[str, Any] | None:
        if self.account is None or not open_matches:
            return None
        return {"account": self.account, "match": random.choice(open_matches),
                "pick": random.choice(("home", "draw", "away")),
                "stake": random.randint(1, 100)}

    @task(3)
    def bet(self) -> None:
        bet = self._bet()
        if bet is None:
            return
        with self.client.post("/api/bets", json=bet, name="/api/bets",
                              catch_response=True) as resp:
            if resp.status_code == 201:
                body = _json(resp)
                if body is not None and not isinstance(body.get("id"), int):
                    resp.failure(f"wrong bet body: {resp.text[:80]!r}")
                elif body is not None:
                    resp.success()
            else:
                _check_error(resp, (409, 422))

    @task(2)
    def bet_write_behind(self) -> None:
        bet = self._bet()
        if bet is None:
            return
        ticket = None
        with self.client.post("/api/bets?async=1", json=bet, name="/api/bets?async=1",
                              catch_response=True) as resp:
            body = _body(resp, 202)
            if body is None:
                return
            ticket = body.get("ticket")
            if not isinstance(ticket, str) or body.get("status_url") != f"/api/tickets/{ticket}":
                resp.failure(f"wrong ticket body: {resp.text[:80]!r}")
                return
            resp.success()
        for _ in range(TICKET_POLLS):  # bounded
            with self.client.get(f"/api/tickets/{ticket}", name="/api/tickets/[ticket]",
                                 catch_response=True) as resp:
                body = _body(resp, 200)
                if body is None:
                    return
                status = body.get("status")
                if status == "committed" and isinstance(body.get("bet"), int):
                    resp.success()
                    return
                if status == "refused" and isinstance(body.get("reason"), str):
                    resp.success()  # a closed match or an overdraft: a correct answer
                    return
                if status != "pending":
                    resp.failure(f"wrong ticket status: {resp.text[:80]!r}")
                    return
                resp.success()
            time.sleep(TICKET_POLL_S)  # gevent-patched: yields to the other users
        events.request.fire(request_type="TICKET", name="ticket still pending",
                            response_time=TICKET_POLLS * TICKET_POLL_S * 1000,
                            response_length=0, context={},
                            exception=RuntimeError(f"ticket {ticket} pending after "
                                                   f"{TICKET_POLLS} polls"))

    @task(1)
    def balance(self) -> None:
        if self.account is None:
            return
        with self.client.get(f"/api/accounts/{self.account}", name="/api/accounts/[id]",
                             catch_response=True) as resp:
            body = _body(resp, 200)
            if body is None:
                return
            balance = body.get("balance")
            if body.get("id") != self.account or not isinstance(balance, int) or balance < 0:
                resp.failure(f"wrong account body: {resp.text[:80]!r}")
            else:
                resp.success()


class Admin(_Base):
    """Now and then: opens a match, closes an older one, reads the stats."""

    weight = 1
    wait_time = _think(1.0, 3.0)

    @task(2)
    def open_match(self) -> None:
        if len(open_matches) >= OPEN_MATCHES_TARGET * 2:
            return
        with self.client.post("/api/matches", json={"name": f"match-{uuid.uuid4().hex[:8]}"},
                              name="/api/matches", catch_response=True) as resp:
            body = _body(resp, 201)
            if body is None:
                return
            if not isinstance(body.get("id"), int):
                resp.failure(f"wrong match body: {resp.text[:80]!r}")
                return
            open_matches.append(body["id"])
            resp.success()

    @task(1)
    def close_match(self) -> None:
        if len(open_matches) <= OPEN_MATCHES_TARGET:
            return
        match = open_matches.pop(0)  # the oldest; no other user closes it (409 if one did)
        with self.client.post(f"/api/matches/{match}/close",
                              json={"winner": random.choice(("home", "draw", "away"))},
                              headers=ADMIN, name="/api/matches/[id]/close",
                              catch_response=True) as resp:
            if resp.status_code == 200:
                body = _json(resp)
                if body is not None and body.get("closed") is not True:
                    resp.failure(f"wrong close body: {resp.text[:80]!r}")
                elif body is not None:
                    resp.success()
            else:
                _check_error(resp, (409,))

    @task(3)
    def stats(self) -> None:
        with self.client.get("/api/stats", name="/api/stats", catch_response=True) as resp:
            body = _body(resp, 200)
            if body is None:
                return
            if not isinstance(body, dict):
                resp.failure(f"stats is not an object: {resp.text[:80]!r}")
            else:
                resp.success()


__all__ = ["Admin", "Bettor", "PageViewer"]
