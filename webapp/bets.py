"""Accounts, matches and bets: synchronous, write-behind, and the close barrier.

A bet is one transaction fn on the writer: the match must be open, the
stake comes off the balance (the CHECK balance >= 0 refuses an overdraft),
the bet row goes in. ``POST /api/bets`` waits for the commit (201);
``POST /api/bets?async=1`` enqueues the same fn and answers 202 with a ticket
at once. Every ticket ends ``committed`` or ``refused``: the
gateway answers every Future it accepted, a graceful stop included (it
drains). Closing a match goes through the same FIFO, so a bet accepted after
the close is refused by the open check, and one accepted before it is settled.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

import apsw
import cherrypy

from helpers import settlement
from sqlite_gateway import Overloaded

from . import validate
from .security import admin_only, json_post
from .tree import Collection, Resource

MAX_BALANCE = 10**12
MAX_STAKE = 10**9
TICKETS_KEPT = 100_000  # Futures remembered in memory; committed ones stay findable in the db


class Refused(Exception):
    """A bet or close the rules refuse; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def place_bet(conn: Any, account: int, match: int, pick: str, stake: int,
              ticket: str | None = None) -> int:
    """On the writer: check, debit, insert; returns the bet id. May run twice
    (see the README's guarantees): every effect is in the database.

    ``placed_at`` is stamped by SQLite while the statement holds the write
    lock (``unixepoch('subsec')``, ms), not in the handler: a stamp taken
    before queueing, or before the lock, could fall after a close that
    committed first, and "no bet after the close" must be exact on both
    backends."""
    status = conn.execute("SELECT status FROM matches WHERE id = ?", (match,)).scalar()
    if status is None:
        raise Refused(422, "no such match")
    if status != "open":
        raise Refused(409, "match is closed")
    try:
        debited = conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?",
                               (stake, account)).rowcount
    except apsw.ConstraintError:  # CHECK (balance >= 0)
        raise Refused(422, "insufficient balance") from None
    if debited != 1:
        raise Refused(422, "no such account")
    return int(conn.execute(
        "INSERT INTO bets(ticket, account, match, pick, stake, placed_at)"
        " VALUES (?, ?, ?, ?, ?, unixepoch('subsec'))",
        (ticket, account, match, pick, stake)).lastrowid)


def close_match(conn: Any, match: int, winner: str) -> None:
    """On the writer: close an open match, stamping ``closed_at`` under the
    write lock (see place_bet for why)."""
    changed = conn.execute("UPDATE matches SET status = 'closed', winner = ?,"
                           " closed_at = unixepoch('subsec') WHERE id = ? AND status = 'open'",
                           (winner, match)).rowcount
    if changed != 1:
        exists = conn.execute("SELECT 1 FROM matches WHERE id = ?", (match,)).rows
        raise Refused(409, "match is already closed") if exists else Refused(404, "no such match")


def _settle(db: Any) -> dict[str, int] | None:
    """Pay out at once; if that fails, the periodic settlement job pays later."""
    try:
        result: dict[str, int] = settlement.run(db, priority="interactive")
    except Exception:  # noqa: BLE001 - logged; the periodic job settles it later
        cherrypy.log("settlement after close failed; the periodic job will retry",
                     context="webapp", severity=logging.ERROR, traceback=True)
        return None
    return result


class TicketBook:
    """Write-behind tickets -> Futures, bounded: the oldest finished go first."""

    def __init__(self, capacity: int = TICKETS_KEPT) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()  # guards _futures (insert, evict, lookup)
        self._futures: OrderedDict[str, Future[int]] = OrderedDict()

    def submit(self, db: Any, *args: Any) -> str:
        """Enqueue ``place_bet(*args, ticket)`` and remember its Future."""
        ticket = uuid.uuid4().hex
        with self._lock:
            if len(self._futures) >= self.capacity:
                # Bounded: at most `capacity` looks, evicting finished ones only.
                for key in list(self._futures)[: self.capacity]:
                    if self._futures[key].done():
                        del self._futures[key]
                        if len(self._futures) < self.capacity:
                            break
            if len(self._futures) >= self.capacity:
                raise Overloaded(self.capacity)
            self._futures[ticket] = db.submit_transaction(place_bet, *args, ticket)
        return ticket

    def get(self, ticket: str) -> Future[int] | None:
        with self._lock:
            return self._futures.get(ticket)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Refused):
        return exc.reason
    if isinstance(exc, apsw.ConstraintError):
        return f"conflict: {exc}"
    cherrypy.log(f"write-behind bet failed: {type(exc).__name__}: {exc}", context="webapp",
                 severity=logging.ERROR)
    return f"not placed: {type(exc).__name__}"


class AccountList(Resource):
    """``/api/accounts``: POST {name, balance} (admin: it hands out money)."""

    @admin_only
    @json_post
    def POST(self, /, **_query: Any) -> dict[str, Any]:
        body = validate.json_body("name", "balance")
        name = validate.name(body["name"], "name")
        balance = validate.integer(body["balance"], "balance", 0, MAX_BALANCE)
        res = cherrypy.request.db.execute(
            "INSERT INTO accounts(name, balance) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
            (name, balance))
        if res.rowcount != 1:
            raise cherrypy.HTTPError(409, "account name exists")
        cherrypy.response.status = 201
        return {"id": res.lastrowid}


class Account(Resource):
    """``/api/accounts/<id>``: GET."""

    def __init__(self, ident: str) -> None:
        super().__init__()
        self.ident = ident

    def GET(self, /, **_query: Any) -> dict[str, Any]:
        account = validate.path_id(self.ident, "account")
        rows = cherrypy.request.db.execute(
            "SELECT id, name, balance FROM accounts WHERE id = ?", (account,)).dicts()
        if not rows:
            raise cherrypy.HTTPError(404, "no such account")
        row: dict[str, Any] = rows[0]
        return row


class MatchList(Resource):
    """``/api/matches``: POST {name} opens a match."""

    @json_post
    def POST(self, /, **_query: Any) -> dict[str, Any]:
        body = validate.json_body("name")
        name = validate.name(body["name"], "name")
        res = cherrypy.request.db.execute("INSERT INTO matches(name) VALUES (?)", (name,))
        cherrypy.response.status = 201
        return {"id": res.lastrowid}


class Match(Resource):
    """``/api/matches/<id>``: GET."""

    def __init__(self, ident: str) -> None:
        super().__init__()
        self.ident = ident

    def GET(self, /, **_query: Any) -> dict[str, Any]:
        match = validate.path_id(self.ident, "match")
        rows = cherrypy.request.db.execute(
            "SELECT id, name, status, winner, closed_at,"
            " (SELECT count(*) FROM bets WHERE bets.match = matches.id) AS bets"
            " FROM matches WHERE id = ?", (match,)).dicts()
        if not rows:
            raise cherrypy.HTTPError(404, "no such match")
        row: dict[str, Any] = rows[0]
        return row


class MatchClose(Resource):
    """``/api/matches/<id>/close``: POST {winner} (admin: it decides who is paid)."""

    def __init__(self, ident: str) -> None:
        super().__init__()
        self.ident = ident

    @admin_only
    @json_post
    def POST(self, /, **_query: Any) -> dict[str, Any]:
        match = validate.path_id(self.ident, "match")
        body = validate.json_body("winner")
        winner = validate.name(body["winner"], "winner")
        db = cherrypy.request.db
        # Through the write-behind FIFO, then the barrier: everything accepted
        # before the close is committed (or refused) once flush() returns.
        closing = db.submit_transaction(close_match, match, winner)
        db.flush()
        try:
            closing.result(timeout=0)
        except Refused as exc:
            raise cherrypy.HTTPError(exc.status, exc.reason) from None
        return {"closed": True, "settled": _settle(db)}


class BetList(Resource):
    """``/api/bets``: POST {account, match, pick, stake}; ``?async=1`` for write-behind."""

    def __init__(self, tickets: TicketBook) -> None:
        super().__init__()
        self.tickets = tickets

    @json_post
    def POST(self, /, **query: Any) -> dict[str, Any]:
        write_behind = validate.flag(query, "async")
        body = validate.json_body("account", "match", "pick", "stake")
        args = (validate.body_id(body["account"], "account"),
                validate.body_id(body["match"], "match"),
                validate.name(body["pick"], "pick"),
                validate.integer(body["stake"], "stake", 1, MAX_STAKE))
        db = cherrypy.request.db
        if write_behind:
            ticket = self.tickets.submit(db, *args)
            cherrypy.response.status = 202
            return {"ticket": ticket, "status_url": f"/api/tickets/{ticket}"}
        try:
            bet = db.transaction(place_bet, *args)
        except Refused as exc:
            raise cherrypy.HTTPError(exc.status, exc.reason) from None
        cherrypy.response.status = 201
        return {"id": bet}


class Ticket(Resource):
    """``/api/tickets/<ticket>``: GET pending, committed or refused (with the reason)."""

    def __init__(self, tickets: TicketBook, segment: str) -> None:
        super().__init__()
        self.tickets = tickets
        self.segment = segment

    def GET(self, /, **_query: Any) -> dict[str, Any]:
        ticket = validate.ticket(self.segment)
        future = self.tickets.get(ticket)
        if future is None:  # forgotten (bounded memory) or from before a restart
            bet = cherrypy.request.db.execute("SELECT id FROM bets WHERE ticket = ?",
                                              (ticket,)).scalar()
            if bet is None:
                raise cherrypy.HTTPError(404, "no such ticket")
            return {"status": "committed", "reason": None, "bet": bet}
        if not future.done():
            return {"status": "pending", "reason": None, "bet": None}
        exc = future.exception()
        if exc is not None:
            return {"status": "refused", "reason": _reason(exc), "bet": None}
        return {"status": "committed", "reason": None, "bet": future.result()}


def collections(tickets: TicketBook) -> dict[str, Collection]:
    """/api/accounts[/<id>], /api/matches[/<id>[/close]], /api/tickets/<ticket>."""
    return {
        "accounts": Collection(AccountList(), Account),
        "matches": Collection(MatchList(), Match, {"close": MatchClose}),
        "tickets": Collection(None, functools.partial(Ticket, tickets)),
    }
