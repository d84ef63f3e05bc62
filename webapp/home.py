"""``/``: the home page, with the app's own data: pages (views and cap) and open matches."""

from __future__ import annotations

import html
from typing import Any

import cherrypy

from . import layout
from .tree import Resource

SHOWN = 50  # rows per table


def _pages_table(rows: list[tuple[str, int, int]], total: int) -> str:
    if not rows:
        return ('<p class="muted">No pages yet. Create one with '
                '<code>POST /api/pages {"name": "home", "cap": 100}</code>.</p>')
    lines = []
    for name, views, cap in rows:
        share = 100.0 * views / cap if cap else 100.0
        lines.append(
            f'<tr><td><a href="{html.escape(layout.href("pages", name))}">{html.escape(name)}'
            f'</a></td><td class="num">{views:,}</td><td class="num">{cap:,}</td>'
            f'<td><meter min="0" max="100" value="{share:.1f}">{share:.0f}%</meter></td></tr>')
    more = f'<p class="muted">{SHOWN} of {total:,} pages shown.</p>' if total > SHOWN else ""
    return ('<table><thead><tr><th>page</th><th class="num">views</th><th class="num">cap</th>'
            f'<th>used</th></tr></thead><tbody>{"".join(lines)}</tbody></table>{more}')


def _matches_table(rows: list[tuple[int, str, int, int]]) -> str:
    if not rows:
        return ('<p class="muted">No open match. Open one with '
                '<code>POST /api/matches {"name": "final"}</code>.</p>')
    lines = [f'<tr><td class="num"><a href="{html.escape(layout.href("api", "matches", str(i)))}">'
             f'{i}</a></td><td>{html.escape(name)}</td><td class="num">{bets:,}</td>'
             f'<td class="num">{staked:,}</td></tr>' for i, name, bets, staked in rows]
    return ('<table><thead><tr><th class="num">id</th><th>match</th><th class="num">bets</th>'
            f'<th class="num">staked</th></tr></thead><tbody>{"".join(lines)}</tbody></table>')


API = """<h2>API</h2>
<table class="api"><tbody>
<tr><td><code>POST /api/pages</code> <code>{name, cap}</code></td>
    <td>a page with a view cap</td></tr>
<tr><td><code>GET /api/pages/&lt;name&gt;</code></td><td>its views and cap</td></tr>
<tr><td><code>POST /api/pages/&lt;name&gt;/view</code> <code>{}</code></td>
<td>count one view (410 at the cap)</td></tr>
<tr><td><code>POST /api/accounts</code> <code>{name, balance}</code></td><td>admin</td></tr>
<tr><td><code>POST /api/matches</code> <code>{name}</code></td><td>open a match</td></tr>
<tr><td><code>POST /api/bets[?async=1]</code> <code>{account, match, pick, stake}</code></td>
<td>201, or 202 with a ticket</td></tr>
<tr><td><code>POST /api/matches/&lt;id&gt;/close</code> <code>{winner}</code></td>
    <td>admin</td></tr>
<tr><td><code>GET /api/stats</code>, <code>GET /metrics</code></td>
<td>gateway figures (JSON, Prometheus)</td></tr>
</tbody></table>
<p class="muted">Every POST is JSON (<code>Content-Type: application/json</code>); admin actions
take HTTP Basic auth, user <code>admin</code> and the token the server printed at start.</p>"""


class Home(Resource):
    """``/``: pages by views, open matches, the gateway's state and the API."""

    def GET(self, /, **_query: Any) -> str:
        db = cherrypy.request.db
        pages = db.execute("SELECT name, views, cap FROM pages ORDER BY views DESC, name"
                           " LIMIT ?", (SHOWN,)).rows
        totals = db.execute("SELECT count(*), coalesce(sum(views), 0) FROM pages").rows[0]
        matches = db.execute(
            "SELECT m.id, m.name, count(b.id), coalesce(sum(b.stake), 0) FROM matches m"
            " LEFT JOIN bets b ON b.match = m.id WHERE m.status = 'open'"
            " GROUP BY m.id ORDER BY m.id DESC LIMIT ?", (SHOWN,)).rows
        figures = db.stats()
        body = (
            "<h1>sqlite-gateway demo</h1>"
            '<div class="cards">'
            f'<div class="card"><span>pages</span><strong>{totals[0]:,}</strong></div>'
            f'<div class="card"><span>views</span><strong>{totals[1]:,}</strong></div>'
            f'<div class="card"><span>open matches</span><strong>{len(matches):,}'
            "</strong></div>"
            f'<div class="card"><span>gateway</span><strong>{html.escape(str(figures["state"]))}'
            f'</strong><small>{figures["requests"]:,} requests</small></div></div>'
            '<div class="columns"><section><h2>Pages</h2>'
            f"{_pages_table(pages, totals[0])}</section>"
            f"<section><h2>Open matches</h2>{_matches_table(matches)}</section></div>"
            f"{API}")
        return layout.page("sqlite-gateway demo", body)
