"""Settle closed matches: pay each bet, credit the winners, mark the match settled.

The web app closes a match with a request in the gateway's FIFO, so a bet
accepted before the close is ahead of it and one after it is refused (its
transaction sees ``status != 'open'``). ``run`` calls ``db.flush()`` first, the
barrier after which every bet accepted before the close is committed, then
settles each match in its own transaction, which checks ``status = 'closed'``
again: settling twice pays once.
"""

from __future__ import annotations

from typing import Any

from cherrypy.process.wspbus import Bus

from .periodic import PeriodicJob


def run(db: Any, *, priority: str = "background") -> dict[str, int]:
    """Settle every closed match; each match's transaction at ``priority``
    (the web app's close handler, whose caller waits, passes "interactive").

    Returns:
        ``{"matches": matches settled, "bets": bets paid (winning or not)}``.
    """
    # The barrier first: a close submitted write-behind is visible to a read
    # (which sees what is committed) only once it has committed.
    db.flush()
    closed = [row[0] for row in
              db.execute("SELECT id FROM matches WHERE status = 'closed' ORDER BY id").rows]
    if not closed:
        return {"matches": 0, "bets": 0}
    matches = bets = 0
    for match_id in closed:
        paid = db.transaction(_settle, match_id, priority=priority)
        if paid is not None:
            matches += 1
            bets += paid
    return {"matches": matches, "bets": bets}


def _settle(conn: Any, match_id: int) -> int | None:
    rows = conn.execute("SELECT winner FROM matches WHERE id = ? AND status = 'closed'",
                        (match_id,)).rows
    if not rows:
        return None  # settled meanwhile (another run) or not closed
    winner = rows[0][0]
    paid: int = conn.execute(
        "UPDATE bets SET payout = CASE WHEN pick = ? THEN 2 * stake ELSE 0 END "
        "WHERE match = ? AND payout IS NULL", (winner, match_id)).rowcount
    conn.execute(
        "UPDATE accounts SET balance = balance + "
        "(SELECT sum(payout) FROM bets WHERE match = ?1 AND account = accounts.id) "
        "WHERE id IN (SELECT account FROM bets WHERE match = ?1 AND payout > 0)", (match_id,))
    conn.execute("UPDATE matches SET status = 'settled' WHERE id = ?", (match_id,))
    return paid


class SettlementJob(PeriodicJob):
    """:func:`run` every ``interval`` seconds (default 1)."""

    def __init__(self, bus: Bus, interval: float = 1.0, name: str | None = "settlement",
                 **settings: Any) -> None:
        super().__init__(bus, run, interval, name, **settings)
