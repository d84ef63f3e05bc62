"""Page views with a cap: never more views than the cap, however many callers.

A view is one statement on the writer, answered once committed: a
conditional UPDATE (``views < cap``) that returns the new count. The single
writer runs such statements one after another, so the cap is exact without
retries; the CHECK (views <= cap) in schema.sql is the last line of defence.
The view's row in the access log (``page_views``, for the hourly rollup) is
then posted fire-and-forget (``db.post``): it needs no answer, is committed
in order within milliseconds, and a failure is logged, never silent. Only
the log row of a view answered just before a crash can be lost; the count
the caller was told never is.
"""

from __future__ import annotations

import html
import time
from typing import Any

import cherrypy

from . import layout, validate
from .security import json_post
from .tree import Collection, Resource

MAX_CAP = 10**9


COUNT_VIEW = ("UPDATE pages SET views = views + 1 WHERE name = ? AND views < cap "
              "RETURNING views, cap")
LOG_VIEW = "INSERT INTO page_views(page, at) VALUES (?, ?)"


def count_view(db: Any, name: str, now: float) -> tuple[bool, int, int] | None:
    """Count one view if under the cap (committed when this returns), then post
    its log row. Returns (counted, views, cap), or None for an unknown page."""
    rows = db.execute(COUNT_VIEW, (name,)).rows
    if rows:
        db.post(LOG_VIEW, (name, now))
        return True, rows[0][0], rows[0][1]
    rows = db.execute("SELECT views, cap FROM pages WHERE name = ?", (name,)).rows
    if not rows:
        return None
    return False, rows[0][0], rows[0][1]


class PageList(Resource):
    """``/api/pages``: POST {name, cap} creates a page."""

    @json_post
    def POST(self, /, **_query: Any) -> dict[str, Any]:
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


def _page_row(name: str) -> dict[str, Any]:
    name = validate.path_name(name, "page")
    rows = cherrypy.request.db.execute(
        "SELECT name, views, cap FROM pages WHERE name = ?", (name,)).dicts()
    if not rows:
        raise cherrypy.HTTPError(404, "no such page")
    row: dict[str, Any] = rows[0]
    return row


class Page(Resource):
    """``/api/pages/<name>``: GET shows it (it counts no view)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def GET(self, /, **_query: Any) -> dict[str, Any]:
        return _page_row(self.name)


class PageView(Resource):
    """``/api/pages/<name>/view``: POST {} counts one view; 410 once the cap is reached."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    @json_post
    def POST(self, /, **_query: Any) -> dict[str, Any]:
        validate.json_body()
        name = validate.path_name(self.name, "page")
        outcome = count_view(cherrypy.request.db, name, time.time())
        if outcome is None:
            raise cherrypy.HTTPError(404, "no such page")
        counted, views, cap = outcome
        if not counted:
            cherrypy.response.status = 410
            return {"error": "cap reached", "views": views, "cap": cap}
        return {"views": views, "cap": cap}


class PageHtml(Resource):
    """``/pages/<name>``: the page for a browser. Showing it changes nothing (a
    GET or HEAD never counts); its script posts the view, as a JSON POST."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def GET(self, /, **_query: Any) -> str:
        try:
            row = _page_row(self.name)
        except cherrypy.HTTPError:
            cherrypy.response.status = 404
            return layout.page("no such page", "<h1>No such page</h1>"
                               '<p><a href="/">Back to the list of pages</a>.</p>')
        title = html.escape(row["name"])
        view_url = html.escape(layout.href("api", "pages", row["name"], "view"))
        body = (f"<h1>{title}</h1>"
                f'<p class="big"><span id="views">{row["views"]}</span> of '
                f'<span id="cap">{row["cap"]}</span> views</p>'
                f'<p id="outcome" class="muted">counting this view&hellip;</p>'
                f'<p><a href="/">All pages</a></p>')
        return layout.page(row["name"], body, script="page.js",
                           data=f' data-view-url="{view_url}"')


def collection() -> Collection:
    """/api/pages, /api/pages/<name>, /api/pages/<name>/view."""
    return Collection(PageList(), Page, {"view": PageView})
