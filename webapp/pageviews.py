"""Page views with a cap: never more views than the cap, however many callers.

A view is one transaction fn on the writer: a conditional UPDATE (``views <
cap``) and, only when it changed the row, the INSERT of the view. The single
writer runs such fns one after another, so the cap is exact without retries;
the CHECK (views <= cap) in schema.sql is the last line of defence.
"""

from __future__ import annotations

import html
import time
from typing import Any

import cherrypy

from . import validate

MAX_CAP = 10**9


def record_view(conn: Any, name: str, now: float) -> tuple[bool, int, int] | None:
    """On the writer: count one view if under the cap. Returns (counted, views,
    cap), or None for an unknown page."""
    counted = conn.execute("UPDATE pages SET views = views + 1 WHERE name = ? AND views < cap",
                           (name,)).rowcount == 1
    if counted:
        conn.execute("INSERT INTO page_views(page, at) VALUES (?, ?)", (name, now))
    rows = conn.execute("SELECT views, cap FROM pages WHERE name = ?", (name,)).rows
    if not rows:
        return None
    return counted, rows[0][0], rows[0][1]


class PageViews:
    """Handlers for /api/pages and /pages/<name> (uses ``cherrypy.request.db``)."""

    def create(self, **_query: Any) -> dict[str, Any]:
        body = validate.json_body("name", "cap")
        name = validate.name(body["name"], "name")
        cap = validate.integer(body["cap"], "cap", 0, MAX_CAP)
        res = cherrypy.request.db.execute(
            "INSERT INTO pages(name, views, cap) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
            (name, cap))
        if res.rowcount != 1:
            raise cherrypy.HTTPError(409, "page exists")
        cherrypy.response.status = 201
        return {"name": name, "views": 0, "cap": cap}

    def show(self, name: str, **_query: Any) -> dict[str, Any]:
        name = validate.path_name(name, "page")
        rows = cherrypy.request.db.execute(
            "SELECT name, views, cap FROM pages WHERE name = ?", (name,)).dicts()
        if not rows:
            raise cherrypy.HTTPError(404, "no such page")
        row: dict[str, Any] = rows[0]
        return row

    def view(self, name: str, **_query: Any) -> dict[str, Any]:
        name = validate.path_name(name, "page")
        outcome = cherrypy.request.db.transaction(record_view, name, time.time())
        if outcome is None:
            raise cherrypy.HTTPError(404, "no such page")
        counted, views, cap = outcome
        if not counted:
            cherrypy.response.status = 410
            return {"error": "cap reached", "views": views, "cap": cap}
        return {"views": views, "cap": cap}

    def html_view(self, name: str, **_query: Any) -> str:
        """A tiny HTML page that counts a view of itself."""
        name = validate.path_name(name, "page")
        outcome = cherrypy.request.db.transaction(record_view, name, time.time())
        title = html.escape(name)
        if outcome is None:
            cherrypy.response.status = 404
            body = "<p>No such page.</p>"
        elif not outcome[0]:
            cherrypy.response.status = 410
            body = f"<p>This page has reached its cap of {outcome[2]} views.</p>"
        else:
            body = f"<p>View {outcome[1]} of {outcome[2]}.</p>"
        return (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
                f'</head><body><h1>{title}</h1>{body}<p><a href="/">home</a></p></body></html>')
