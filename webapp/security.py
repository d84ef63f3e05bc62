"""What keeps the demo app safe on a network: CherryPy tools and one body reader.

- ``tools.admin``: HTTP Basic auth (``cherrypy.lib.auth_basic``) for the admin
  actions (creating an account with a balance, closing a match). It runs
  before the body is read, so an anonymous client never gets a body parsed.
  The credential is :func:`admin_token`: the config's ``webapp.admin_token``,
  else the environment's ``SQLITE_GATEWAY_ADMIN_TOKEN``, else a random one made
  at start and printed once (as Jupyter does), never a value from the repository.
- ``tools.guard``: refuses a foreign ``Host`` header when the server listens
  on loopback only (DNS rebinding: a page of evil.example resolved to
  127.0.0.1 would otherwise talk to the app as a same-origin page), and a
  state-changing request that a browser marks as coming from another site
  (``Origin`` or ``Sec-Fetch-Site``). A cross-site form or ``text/plain``
  POST is refused anyway: every POST must be ``application/json``, which a
  page of another site cannot send without a CORS preflight that this app
  never grants.
- Request bodies are read by ``bodies.BodyReader`` (bounded, timed, a few
  threads at once); a body nobody read is not read after the answer either.
- ``tools.headers``: security headers on every answer (``nosniff``, a
  Content-Security-Policy, ``Cache-Control``) and JSON error bodies sent
  without CherryPy's padding.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from typing import Any
from urllib.parse import urlsplit

import cherrypy
from cherrypy.lib import auth_basic

# error_page.default for the app: the integration's JSON page.
from sqlite_gateway.integrations.cherrypy import json_error_page as json_error_page

from . import bodies

TOKEN_ENV = "SQLITE_GATEWAY_ADMIN_TOKEN"
ADMIN_USER = "admin"
REALM = "sqlite-gateway demo admin"

# The HTML pages load their script and style from /static only: no inline code runs.
HTML_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def admin_token(configured: str | None) -> tuple[str, bool]:
    """The admin credential and whether it was made up here (then print it once).

    An explicit setting (``webapp.admin_token``) wins over the environment, so a
    test or a config file outside the repository decides; an empty value counts
    as unset.
    """
    for candidate in (configured, os.environ.get(TOKEN_ENV)):
        if candidate:
            return candidate, False
    return secrets.token_urlsafe(24), True


class AdminCheck:
    """``checkpassword(realm, user, password)`` for ``auth_basic``: user ``admin``
    and the token, compared in constant time."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the admin token must not be empty")
        self._token = token.encode()

    def __call__(self, realm: str, user: str, password: str) -> bool:
        return (hmac.compare_digest(user.encode(), ADMIN_USER.encode())
                & hmac.compare_digest(password.encode(), self._token))


def json_post(method: Any) -> Any:
    """Mark a resource's POST as taking a JSON body (``tools.json_in``).

    The body is read only for such a method: the app config switches body
    processing off elsewhere, so a POST to a 404 or 405 path, or with a form
    body, is answered without reading a byte of it.
    """
    return cherrypy.config(**{"request.process_request_body": True,
                              "tools.json_in.on": True})(method)


def admin_only(method: Any) -> Any:
    """Mark a resource's HTTP method as an admin action (``tools.admin``).

    Set on the method, not on the resource, so that a wrong method on an admin
    path still gets its 405 with ``Allow`` (MethodDispatcher merges a method's
    config only when it runs that method).
    """
    return cherrypy.config(**{"tools.admin.on": True})(method)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """``Host`` header -> the name without the port (``[::1]:8080`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def guard(allowed_hosts: tuple[str, ...] = ()) -> None:
    """``tools.guard`` (on_start_resource): the Host check and the cross-site check.

    The Host check applies when the server listens on a loopback address (or
    when ``allowed_hosts`` lists names): then only loopback names and the
    listed ones are answered (any port: an ssh tunnel may change it).
    """
    request = cherrypy.serving.request
    bound = str(cherrypy.config.get("server.socket_host", ""))
    if allowed_hosts or _is_loopback(_host_name(bound)):
        name = _host_name(request.headers.get("Host", ""))
        if not (_is_loopback(name) or name in {h.lower() for h in allowed_hosts}):
            raise cherrypy.HTTPError(421, "unexpected Host header: this server answers only "
                                          "to its own names (webapp.allowed_hosts)")
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise cherrypy.HTTPError(403, "cross-site requests are refused")
    origin = request.headers.get("Origin")
    if origin is not None:
        host = request.headers.get("Host", "").lower()
        if origin == "null" or urlsplit(origin).netloc.lower() != host:
            raise cherrypy.HTTPError(403, "cross-site requests are refused")


def security_headers() -> None:
    """``tools.headers``: runs before every answer goes out (errors included).

    It also stops reading a body that nobody read (a 401, 404, 405, 415 or 503
    answered before the body): the server would otherwise read what is left of
    it after the answer, for as long as the client takes, on this thread.
    """
    response = cherrypy.serving.response
    headers = response.headers
    if getattr(cherrypy.serving.request.rfile, "remaining", 0) > 0:
        bodies.stop_reading(cherrypy.serving.request)
        headers["Connection"] = "close"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    ctype = str(headers.get("Content-Type", ""))
    if ctype.startswith("text/html"):
        headers["Content-Security-Policy"] = HTML_POLICY
        headers["Cache-Control"] = "no-cache"
    elif ctype.startswith(("text/css", "text/javascript", "application/javascript")):
        headers["Cache-Control"] = "no-cache"  # revalidated (Last-Modified) at each load
    else:
        headers["Content-Security-Policy"] = API_POLICY
        headers["Cache-Control"] = "no-store"
    code = int(str(response.status).split()[0]) if response.status else 200
    if code >= 400 and ctype.startswith("application/json"):
        # CherryPy pads short error bodies with spaces to 513 bytes, for old
        # Internet Explorers; JSON from json.dumps never ends with a space, so
        # stripping them restores the body as written.
        body = response.collapse_body().rstrip(b" ")
        response.body = body
        headers.pop("Content-Length", None)  # finalize() sets the true one


class HeadersTool(cherrypy.Tool):  # type: ignore[misc]  # cherrypy is untyped
    """``security_headers`` at ``before_finalize`` (answers and HTTPErrors) and at
    ``after_error_response`` (unexpected errors, which skip before_finalize)."""

    def __init__(self) -> None:
        super().__init__("before_finalize", security_headers, priority=90)

    def _setup(self) -> None:
        super()._setup()
        cherrypy.serving.request.hooks.attach("after_error_response", security_headers,
                                              priority=90)


def register_tools() -> None:
    """Put the tools on ``cherrypy.tools`` (idempotent)."""
    cherrypy.tools.admin = cherrypy.Tool("before_request_body", auth_basic.basic_auth,
                                         priority=10)
    cherrypy.tools.guard = cherrypy.Tool("on_start_resource", guard, priority=5)
    cherrypy.tools.headers = HeadersTool()
