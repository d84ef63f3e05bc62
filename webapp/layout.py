"""The frame every HTML page shares: one stylesheet, a navigation bar, no inline code.

The Content-Security-Policy (security.py) lets a page run only scripts and
styles from ``/static``; every value put into a page goes through
``html.escape``, and every link built from a name through :func:`href`.
"""

from __future__ import annotations

import html
from urllib.parse import quote

NAV = (("/", "home"), ("/dashboard", "dashboard"), ("/api/stats", "stats (JSON)"),
       ("/metrics", "metrics (Prometheus)"))


def href(*parts: str) -> str:
    """A path from parts, each percent-encoded whole: ``href("pages", "a?b#c")``
    is ``/pages/a%3Fb%23c``, ``href("pages", "x/y")`` is ``/pages/x%2Fy``."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


def page(title: str, body: str, *, script: str | None = None, data: str = "") -> str:
    """A whole HTML page. ``body`` is HTML the caller escaped; ``script`` a file
    of /static; ``data`` extra attributes for <body> (escaped by the caller)."""
    nav = " ".join(f'<a href="{link}">{html.escape(text)}</a>' for link, text in NAV)
    tag = f'<script src="/static/{script}" defer></script>' if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css">'
            f"<title>{html.escape(title)}</title>{tag}</head>\n"
            f"<body{data}><header><strong>sqlite-gateway demo</strong><nav>{nav}</nav></header>\n"
            f"<main>{body}</main></body></html>\n")
