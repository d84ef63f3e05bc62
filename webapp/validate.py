"""Input checks shared by the controllers.

Every check raises ``cherrypy.HTTPError`` with a 4xx status and a message
meant for the client; the app's error page turns it into ``{"error": ...}``.
Nothing here touches the database: bad input is refused before any SQL runs.
"""

from __future__ import annotations

import re
from typing import Any

import cherrypy

MAX_ID = 2**63 - 1  # SQLite's largest INTEGER PRIMARY KEY
NAME_MAX = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[1-9][0-9]{0,18}")
_TICKET = re.compile(r"[0-9a-f]{32}")


def json_body(*required: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object (parsed by ``tools.json_in``, see security.py,
    which already answered 415, 413, 408 or 400 for a body it could not take);
    400 if not an object, missing a required key or carrying another. The
    message names our fields, never the client's."""
    body = getattr(cherrypy.serving.request, "json", None)
    if not isinstance(body, dict):
        raise cherrypy.HTTPError(400, "the body must be a JSON object")
    missing = [k for k in required if k not in body]
    if missing:
        raise cherrypy.HTTPError(400, f"missing field(s): {', '.join(missing)}")
    if set(body) - set(required) - set(optional):
        allowed = ", ".join((*required, *optional)) or "none"
        raise cherrypy.HTTPError(400, f"unknown field(s) in the body; allowed: {allowed}")
    return body


def name(value: object, field: str) -> str:
    """A name or pick: a string of 1 to 64 characters, no control characters."""
    if not isinstance(value, str):
        raise cherrypy.HTTPError(400, f"{field} must be a string")
    if not 1 <= len(value) <= NAME_MAX:
        raise cherrypy.HTTPError(400, f"{field} must be 1 to {NAME_MAX} characters long")
    if _CONTROL.search(value):
        raise cherrypy.HTTPError(400, f"{field} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        raise cherrypy.HTTPError(400, f"{field} is not valid text") from None
    return value


def integer(value: object, field: str, low: int, high: int) -> int:
    """A JSON integer (not a bool, not a float) in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise cherrypy.HTTPError(400, f"{field} must be an integer")
    if not low <= value <= high:
        raise cherrypy.HTTPError(400, f"{field} must be between {low} and {high}")
    return value


def body_id(value: object, field: str) -> int:
    return integer(value, field, 1, MAX_ID)


def path_id(segment: str, what: str) -> int:
    """A positive integer id taken from the URL; 404 otherwise (no such resource)."""
    if not _DIGITS.fullmatch(segment) or int(segment) > MAX_ID:
        raise cherrypy.HTTPError(404, f"no such {what}")
    return int(segment)


def path_name(segment: str, what: str) -> str:
    """A name taken from the URL; 404 when it cannot name anything."""
    if not 1 <= len(segment) <= NAME_MAX or _CONTROL.search(segment):
        raise cherrypy.HTTPError(404, f"no such {what}")
    try:
        segment.encode("utf-8")
    except UnicodeEncodeError:
        raise cherrypy.HTTPError(404, f"no such {what}") from None
    return segment


def ticket(segment: str) -> str:
    if not _TICKET.fullmatch(segment):
        raise cherrypy.HTTPError(404, "no such ticket")
    return segment


def flag(query: dict[str, Any], key: str) -> bool:
    """A query-string switch: 1/true/yes on, 0/false/no or absent off."""
    value = query.get(key)
    if value is None:
        return False
    if isinstance(value, str) and value.lower() in ("1", "true", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", ""):
        return False
    raise cherrypy.HTTPError(400, f"{key} must be 1 or 0")
