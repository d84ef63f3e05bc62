"""CherryPy integration: an engine plugin and a tool (imports cherrypy).

- :class:`GatewayPlugin`, an engine plugin, owns one :class:`Gateway`: it
  makes and starts it on the engine's ``start``, drains and closes it on
  ``stop`` (so on graceful restart and exit too), and publishes it on the bus
  channel ``"sqlite-gateway"``: ``engine.publish("sqlite-gateway") == [db]``.
- :class:`GatewayTool` hands it to handlers as ``cherrypy.request.db`` and maps
  the errors a handler does not catch to HTTP answers, as JSON, never with a
  traceback (that goes to the log): ``Overloaded`` and ``GatewayClosed`` ->
  503 with Retry-After, ``RequestTimeout`` -> 504, ``apsw.ConstraintError``
  -> 409, anything else -> 500. On the paths where it is on, CherryPy's own
  HTTP errors (404, 405, 413, 415, ...) are JSON too (``json_error_page``,
  unless the app set its own ``error_page.default``), and a request with no
  body headers (``curl -X POST URL``) has an empty body, as HTTP says,
  instead of CherryPy's 411 Length Required.
- A broken gateway (its worker died, or the watchdog gave up a hung one) is
  replaced: the first request that finds it broken asks the plugin, on the
  channel ``"sqlite-gateway-renew"``, to close it and start a new Gateway on
  the same file (at most one attempt per second), then runs on the new one;
  if none can be made it answers 503. ``engine.graceful()`` replaces it too.
  After a hung fn the stuck thread still holds the write lock: writes then
  fail with ``apsw.BusyError`` until the process is restarted.

Ten lines for any app::

    import cherrypy
    from sqlite_gateway.integrations.cherrypy import install

    install(cherrypy.engine, path="app.db", readers=10)   # plugin + cherrypy.tools.db

    class Root:
        @cherrypy.expose
        @cherrypy.tools.db()
        @cherrypy.tools.json_out()
        def count(self):
            return {"n": cherrypy.request.db.execute("SELECT count(*) FROM t").scalar()}

    cherrypy.quickstart(Root())

Config keys: ``engine.sqlite_gateway.<option>`` sets ``path`` or any keyword
option of Gateway (queue_size, timeout, synchronous, readers, ...), read and
checked by :mod:`sqlite_gateway.integrations.settings` as in every integration;
``tools.db.on`` switches the tool on for a path. The plugin makes a
:class:`Gateway`; ``factory=`` (code, not config) makes something else with the
same calls from the path and options, as the benchmarks do to run the demo app
the old ways.
"""

from __future__ import annotations

import html
import http
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..database import Database
from ..errors import GatewayClosed
from ..gateway import Gateway
from ..lifecycle import State
from .extras import needs_extra
from .http import RETRY_AFTER_S, error_answer
from .settings import OPTIONS, DatabaseFactory, check_factory, parse_settings

with needs_extra("web", __name__):
    import cherrypy
    from cherrypy.process.plugins import SimplePlugin
    from cherrypy.process.wspbus import Bus

__all__ = ["CHANNEL", "RETRY_AFTER_S", "GatewayPlugin", "GatewayTool", "install",
           "json_error_page", "json_error_response"]

CHANNEL = "sqlite-gateway"
_ATTRIBUTES = ("bus", "path", "setup", "db")  # the plugin's own public attributes


class GatewayPlugin(SimplePlugin):
    """Owns the engine's Gateway; see the module docstring.

    Priorities, against CherryPy's own (lower runs first): start at 67, after
    the Daemonizer's fork (65) and before the Monitors (70) and the HTTP
    server (75), so the database is open before the first request; stop at
    80, after the HTTP server (25) and the helper jobs (50) have stopped, so
    nothing is still writing when the gateway drains.

    Args:
        bus: the engine (``cherrypy.engine``).
        path: the database file; may also come from config.
        setup: called with the started gateway (e.g. to create the schema).
        factory: makes the database from the path and options (see
            :data:`~sqlite_gateway.integrations.settings.DatabaseFactory`); a Gateway
            unless told.
        **options: Gateway keyword options; each is also an attribute that
            ``engine.sqlite_gateway.<option>`` config sets.
    """

    def __init__(self, bus: Bus, path: str | None = None,
                 setup: Callable[[Database], object] | None = None,
                 factory: DatabaseFactory = Gateway, **options: Any) -> None:
        super().__init__(bus)
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TypeError(f"unknown Gateway options: {', '.join(sorted(unknown))}")
        self.path = path
        self.setup = setup
        self._factory = check_factory(factory)
        for name in OPTIONS:
            setattr(self, name, options.get(name))
        self.db: Database | None = None
        # _lock is held while replacing self.db (start, stop, renew), so that
        # request threads that find the gateway broken replace it only once.
        self._lock = threading.RLock()
        self._renew_failed_at = float("-inf")

    @property
    def factory(self) -> DatabaseFactory:
        """What makes the database (given to the constructor; never configuration)."""
        return self._factory

    @factory.setter
    def factory(self, value: object) -> None:
        raise ValueError("engine.sqlite_gateway.factory cannot be configured: pass "
                         "factory= to GatewayPlugin() or install() in code")

    def subscribe(self) -> None:
        super().subscribe()
        self.bus.subscribe(CHANNEL, self.get)
        self.bus.subscribe(CHANNEL + "-renew", self.renew)

    def unsubscribe(self) -> None:
        super().unsubscribe()
        self.bus.unsubscribe(CHANNEL, self.get)
        self.bus.unsubscribe(CHANNEL + "-renew", self.renew)

    def get(self) -> Database | None:
        """The running gateway (what the ``sqlite-gateway`` channel returns)."""
        return self.db

    def renew(self, broken: Database) -> Database | None:
        """Replace ``broken`` (if it is still the current gateway) with a new one.

        Thread-safe; what the ``sqlite-gateway-renew`` channel calls. Returns
        the current gateway, or None if none could be made (it is tried again
        a second later at the earliest; the error goes to the log).
        """
        with self._lock:
            if self.db is not broken:
                return self.db  # another thread replaced it already
            if time.monotonic() - self._renew_failed_at < RETRY_AFTER_S:
                return None
            self.bus.log(f"sqlite_gateway: the gateway on {self.path} is broken (the reason "
                         "is logged above); replacing it", level=logging.ERROR)
            self.stop()  # returns at once: a broken gateway has nothing to drain
            try:
                self.start()
            except Exception:
                self.bus.log(f"sqlite_gateway: could not reopen {self.path}",
                             level=logging.ERROR, traceback=True)
                self._renew_failed_at = time.monotonic()
                self.db = broken  # so that the next request tries again
                return None
            return self.db

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self.db is not None:
            return
        if not self.path:
            raise ValueError("GatewayPlugin needs a path: pass path= or set "
                             "engine.sqlite_gateway.path in the config")
        # Config sets any attribute it names (engine.sqlite_gateway.<name>): refuse the
        # ones that mean nothing here (a typo, or the old "backend" setting).
        unknown = sorted(n for n in vars(self) if not n.startswith("_")
                         and n not in (*_ATTRIBUTES, *OPTIONS))
        if unknown:
            known = ", ".join(f"engine.sqlite_gateway.{n}" for n in ("path", *OPTIONS))
            raise ValueError(f"unknown setting engine.sqlite_gateway.{unknown[0]}; known: "
                             f"{known}")
        config = {n: getattr(self, n) for n in OPTIONS if getattr(self, n) is not None}
        settings = parse_settings({**config, "path": self.path},
                                  source="engine.sqlite_gateway.{}")
        self.db = settings.open(self.setup, self.factory)
        self.bus.log(f"sqlite_gateway: started on {self.path}")

    start.priority = 67  # type: ignore[attr-defined]

    def stop(self) -> None:
        with self._lock:
            db, self.db = self.db, None
        if db is not None:
            db.close()  # drains: everything accepted is committed first
            self.bus.log(f"sqlite_gateway: closed {self.path} ({db.stats()['requests']} requests)")

    stop.priority = 80  # type: ignore[attr-defined]

    def graceful(self) -> None:
        """Close and reopen: a closed Gateway stays closed, so a new one is made."""
        self.stop()
        self.start()


def json_error_response() -> None:
    """A ``request.error_response`` that answers JSON and logs the traceback.

    The body is the JSON alone, with its exact Content-Length: this path does
    not go through ``HTTPError.set_response``, which pads short error bodies
    with spaces to 513 bytes (for old Internet Explorer).
    """
    exc = sys.exc_info()[1]
    assert exc is not None
    answer_json(exc, exc)


def answer_json(exc: BaseException, cause: BaseException) -> None:
    """Set the response to ``cause``'s JSON error answer; log ``exc``'s traceback when
    the answer says so (an error the app did not expect). Inside an error response."""
    answer = error_answer(cause)
    if answer.logged:
        cherrypy.log(f"unhandled {type(exc).__name__} in {cherrypy.request.path_info}",
                     context="sqlite_gateway", severity=logging.ERROR, traceback=True)
    body = answer.json_body()
    response = cherrypy.serving.response
    response.status = answer.status
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(body))
    response.headers.update(answer.headers)
    response.body = body


def json_error_page(status: str, message: str, traceback: str, version: str) -> str:
    """An ``error_page.default``: CherryPy's HTTP errors (404, 405, 4xx) as JSON.

    The body is ``{"error": message, "status": code}``, never the traceback. A
    message that carries the request's path or query (CherryPy's own 404 says
    "The path '...' was not found.") is replaced by the status phrase: an
    error body never echoes what the client sent.
    """
    headers = cherrypy.serving.response.headers
    headers["Content-Type"] = "application/json"
    code = int(str(status).split()[0])
    if code == 503:  # CherryPy drops a Retry-After set before the error; say it here
        headers["Retry-After"] = str(RETRY_AFTER_S)
    request = cherrypy.serving.request
    echoed = [part for part in (request.path_info, request.query_string) if part]
    if not message or any(part in message for part in echoed) or code == 404 and (
            message.startswith("The path ")):
        message = http.HTTPStatus(code).phrase.lower()
    # CherryPy html-escapes the message before calling us; JSON wants the text.
    return json.dumps({"error": html.unescape(message), "status": code})


class GatewayTool(cherrypy.Tool):
    """Sets ``cherrypy.request.db`` and maps gateway errors to HTTP answers."""

    def __init__(self, channel: str = CHANNEL) -> None:
        self.channel = channel
        super().__init__("on_start_resource", self._attach, priority=20)

    def _attach(self) -> None:
        dbs = [db for db in cherrypy.engine.publish(self.channel) if db is not None]
        if not dbs:  # answered by json_error_response: JSON, Retry-After
            raise GatewayClosed("the database is not available")
        db = dbs[0]
        if db.state is State.BROKEN:
            renewed = [new for new in cherrypy.engine.publish(self.channel + "-renew", db)
                       if new is not None]
            if not renewed:
                raise GatewayClosed("the database gateway is broken and is being restarted")
            db = renewed[0]
        cherrypy.request.db = db

    def _setup(self) -> None:
        super()._setup()
        request = cherrypy.serving.request
        request.error_response = json_error_response
        # Config is applied before tools are set up: an app's own page is already here.
        request.error_page.setdefault("default", json_error_page)
        if "Content-Length" not in request.headers and (
                "Transfer-Encoding" not in request.headers):
            # No body headers means an empty body (RFC 9112, 6.3); CherryPy answers 411.
            request.headers["Content-Length"] = "0"
            request.body.length = 0


def install(engine: Bus | None = None, path: str | None = None, tool_name: str = "db",
            **options: Any) -> GatewayPlugin:
    """Subscribe a :class:`GatewayPlugin` as ``engine.sqlite_gateway`` and
    register :class:`GatewayTool` as ``cherrypy.tools.<tool_name>``.

    ``options`` are the plugin's (``setup``, ``factory``, Gateway options)."""
    engine = engine or cherrypy.engine
    plugin = GatewayPlugin(engine, path, **options)
    plugin.subscribe()
    engine.sqlite_gateway = plugin  # config: engine.sqlite_gateway.*
    setattr(cherrypy.tools, tool_name, GatewayTool())
    return plugin
