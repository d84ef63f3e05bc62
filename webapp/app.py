"""Build the demo app: the gateway plugin and tool, the helper jobs, the routes.

``build_app(config)`` wires everything on the process-wide ``cherrypy.engine``
and mounts the app on ``cherrypy.tree``; ``teardown()`` undoes it (for tests,
which build several apps in one process). Starting and stopping is the
engine's business: ``engine.start()`` opens the database (the plugin runs
schema.sql) and starts the helper jobs; ``engine.stop()`` stops the HTTP
server, then the jobs, then drains and closes the gateway.

Routing is a small table (method, pattern, handler) instead of CherryPy's
object tree, so that a page named "index" or "default" is just a name, and an
existing path with the wrong method answers 405 with ``Allow``.
"""

from __future__ import annotations

import html
import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cherrypy
from cherrypy._cpdispatch import Dispatcher, LateParamPageHandler
from cherrypy.lib import reprconf

from sqlite_gateway.cherrypy_plugin import GatewayPlugin, install

from . import bets, dashboard, pageviews

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "app.conf"
SCHEMA = HERE / "schema.sql"
# (module of helpers/, class name): each is a PeriodicJob plugin; see helpers/.
_JOBS = (("rollup", "RollupJob"), ("settlement", "SettlementJob"),
         ("maintenance", "MaintenanceJob"), ("replication", "ReplicationPlugin"))
_OFF_BY_DEFAULT = {"replication"}  # needs the litestream binary: on only when asked
_HELPER_PREFIX = "helpers."

# What build_app put on the engine and the tree, so that teardown() can undo it.
_installed: dict[str, Any] = {}


def create_schema(db: Any) -> None:
    """The plugin's setup: schema.sql is idempotent, so it runs at every start."""
    db.execute(SCHEMA.read_text())


def load_config(config: str | Path | dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A config file (CherryPy's format) or dict as ``{"global": {...}, "/path": {...}}``;
    a dict without sections is taken as the global section."""
    if config is None:
        config = DEFAULT_CONFIG
    if isinstance(config, (str, Path)):
        loaded = reprconf.Parser().dict_from_file(str(config))
    else:
        loaded = dict(config)
    if not any(isinstance(v, dict) for v in loaded.values()):
        loaded = {"global": loaded}
    return {section: dict(values) for section, values in loaded.items()}


def _json_error_page(status: str, message: str, traceback: str, version: str) -> str:
    """error_page.default: every HTTPError (404, 405, 4xx from validation) as JSON."""
    cherrypy.serving.response.headers["Content-Type"] = "application/json"
    code = int(str(status).split()[0])
    # CherryPy html-escapes the message before calling us; JSON wants the text.
    return json.dumps({"error": html.unescape(message), "status": code})


class Router(Dispatcher):  # type: ignore[misc]  # cherrypy is untyped
    """Dispatch by a table of (method, regex over path_info, handler).

    The parent's walk still runs, for what it does besides finding a handler:
    it merges the app config of every section along the path into
    ``request.config`` (so ``tools.db.on`` and the error page apply).
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = []

    def add(self, method: str, pattern: str, handler: Callable[..., Any]) -> None:
        self.routes.append((method, re.compile(pattern), handler))

    def __call__(self, path_info: str) -> None:
        self.find_handler(path_info)
        request = cherrypy.serving.request
        method = "GET" if request.method == "HEAD" else request.method
        allowed: list[str] = []
        for route_method, regex, handler in self.routes:
            match = regex.fullmatch(path_info)
            if match is None:
                continue
            if route_method == method:
                args = [g.replace("%2F", "/") for g in match.groups()]
                request.handler = LateParamPageHandler(_respond, handler, *args)
                return
            allowed.append(route_method)
        if allowed:
            request.handler = _MethodNotAllowed(allowed)
        else:
            request.handler = cherrypy.NotFound()


class _MethodNotAllowed:
    def __init__(self, allowed: list[str]) -> None:
        self.allowed = sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set()))

    def __call__(self) -> None:
        cherrypy.serving.response.headers["Allow"] = ", ".join(self.allowed)
        raise cherrypy.HTTPError(405, f"use {' or '.join(self.allowed)} here")


def _respond(handler: Callable[..., Any], /, *args: str, **query: Any) -> bytes:
    """Run a handler; a dict or list answer goes out as JSON, a str as HTML.

    The query string arrives as keyword arguments (``handler`` among them is
    one too: positional-only above). A query name that the path already fills
    (``/api/pages/x?name=y``, or ``self``) would be a TypeError, so a 500: it
    is refused as bad input instead.
    """
    clash = sorted(set(query) & _path_parameters(handler, len(args)))
    if clash:
        raise cherrypy.HTTPError(400, f"query parameter(s) {', '.join(clash)} clash with the path")
    result = handler(*args, **query)
    response = cherrypy.serving.response
    if isinstance(result, (dict, list)):
        response.headers["Content-Type"] = "application/json"
        return json.dumps(result).encode()
    response.headers["Content-Type"] = "text/html;charset=utf-8"
    return str(result).encode()


def _path_parameters(handler: Callable[..., Any], count: int) -> set[str]:
    """The names of the parameters that ``self`` and ``count`` path segments fill."""
    function = getattr(handler, "__func__", handler)
    bound = 1 if function is not handler else 0  # a bound method's self
    return set(function.__code__.co_varnames[:bound + count])


_SEG = r"([^/]+)"


def make_router(pages: pageviews.PageViews, betting: bets.Betting,
                stats: dashboard.Dashboard) -> Router:
    router = Router()
    add = router.add
    add("GET", r"/", index)
    add("GET", r"/dashboard", stats.page)
    add("GET", r"/api/stats", stats.current)
    add("GET", r"/api/stats/history", stats.history)
    add("POST", r"/api/pages", pages.create)
    add("GET", rf"/api/pages/{_SEG}", pages.show)
    add("POST", rf"/api/pages/{_SEG}/view", pages.view)
    add("GET", rf"/pages/{_SEG}", pages.html_view)
    add("POST", r"/api/accounts", betting.create_account)
    add("GET", rf"/api/accounts/{_SEG}", betting.show_account)
    add("POST", r"/api/matches", betting.create_match)
    add("GET", rf"/api/matches/{_SEG}", betting.show_match)
    add("POST", rf"/api/matches/{_SEG}/close", betting.close_match)
    add("POST", r"/api/bets", betting.place_bet)
    add("GET", rf"/api/tickets/{_SEG}", betting.show_ticket)
    return router


def index(**_query: Any) -> str:
    names = [row[0] for row in cherrypy.request.db.execute(
        "SELECT name FROM pages ORDER BY name LIMIT 50").rows]
    links = "".join(f'<li><a href="/pages/{html.escape(n)}">{html.escape(n)}</a></li>'
                    for n in names)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sqlite-gateway demo</title></head>
<body><h1>sqlite-gateway demo</h1>
<ul>
<li><a href="/dashboard">dashboard</a> (live gateway figures)</li>
<li><a href="/api/stats">/api/stats</a> (JSON)</li>
</ul>
<h2>Pages</h2><ul>{links or "<li>none yet: POST /api/pages</li>"}</ul>
<p>API: POST /api/pages, /api/pages/&lt;name&gt;/view, /api/accounts, /api/matches,
/api/bets[?async=1], /api/matches/&lt;id&gt;/close; GET /api/tickets/&lt;ticket&gt;.</p>
</body></html>"""


def _split_helper_settings(global_conf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pop ``helpers.<job>.<setting>`` keys (not a CherryPy namespace) out of the config."""
    settings: dict[str, dict[str, Any]] = {}
    for key in [k for k in global_conf if k.startswith(_HELPER_PREFIX)]:
        value = global_conf.pop(key)
        job, _, setting = key[len(_HELPER_PREFIX):].partition(".")
        if setting:
            settings.setdefault(job, {})[setting] = value
    return settings


def _subscribe_jobs(engine: Any, settings: dict[str, dict[str, Any]]) -> list[Any]:
    """Subscribe each helper job whose module exists (helpers/ may lag behind)."""
    jobs = []
    for module_name, class_name in _JOBS:
        options = dict(settings.get(module_name, {}))
        if options.pop("on", module_name not in _OFF_BY_DEFAULT) is False:
            continue
        full = f"helpers.{module_name}"
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            engine.log(f"webapp: {full} is not available; its job does not run")
            continue
        job = getattr(module, class_name)(engine, **options)
        job.subscribe()
        jobs.append(job)
    return jobs


def build_app(config: str | Path | dict[str, Any] | None = None,
              db_path: str | None = None) -> cherrypy.Application:
    """Wire the demo app on ``cherrypy.engine`` and mount it at ``/``.

    Args:
        config: app.conf's path, or the same as a dict (see :func:`load_config`).
        db_path: the database file; overrides ``engine.sqlite_gateway.path``.

    Returns:
        the mounted application. Call ``cherrypy.engine.start()`` next.
    """
    if _installed:
        raise RuntimeError("build_app() was already called: call teardown() first")
    conf = load_config(config)
    global_conf = conf.pop("global", {})
    helper_settings = _split_helper_settings(global_conf)
    backend = global_conf.pop("db.backend", "gateway")
    if helper_settings.get("replication", {}).get("on") is True:
        # Litestream owns checkpointing: no autocheckpoint on the writer, no
        # checkpoint in the maintenance job (unless the config says otherwise).
        helper_settings.setdefault("maintenance", {}).setdefault("checkpoint", False)
        if backend == "gateway":
            global_conf.setdefault("engine.sqlite_gateway.autocheckpoint", 0)
    engine = cherrypy.engine
    plugin: GatewayPlugin = install(engine, setup=create_schema)
    _installed["plugin"] = plugin
    # db.backend: "gateway" (default), "retry" or "busy" (old ways, for
    # comparisons); the app code is the same for all three.
    plugin.backend = backend
    cherrypy.config.update(global_conf)  # engine.sqlite_gateway.* reaches the plugin
    if db_path is not None:
        plugin.path = db_path
    _installed["jobs"] = _subscribe_jobs(engine, helper_settings)

    pages = pageviews.PageViews()
    betting = bets.Betting()
    stats = dashboard.Dashboard()
    app_conf: dict[str, dict[str, Any]] = {"/": {
        "request.dispatch": make_router(pages, betting, stats),
        "error_page.default": _json_error_page,
        "request.show_tracebacks": False,
        "request.show_mismatched_params": False,
        # Handlers read JSON bodies themselves (validate.json_body); no form
        # parsing, and a POST without a body (a page view) needs no Content-Length.
        "request.process_request_body": False,
        "tools.trailing_slash.on": False,
        "tools.db.on": True,
    }}
    for section, values in conf.items():
        app_conf.setdefault(section, {}).update(values)
    app = cherrypy.tree.mount(_Root(), "/", app_conf)
    _installed["app"] = app
    return app


class _Root:
    """The Router does the dispatching; the tree only needs an object to walk."""


def teardown() -> None:
    """Undo build_app (after ``engine.stop()``): unsubscribe, unmount, forget."""
    for job in _installed.pop("jobs", []):
        job.unsubscribe()
    plugin = _installed.pop("plugin", None)
    if plugin is not None:
        plugin.unsubscribe()
        if getattr(cherrypy.engine, "sqlite_gateway", None) is plugin:
            del cherrypy.engine.sqlite_gateway
    if hasattr(cherrypy.tools, "db"):
        del cherrypy.tools.db
    _installed.pop("app", None)
    cherrypy.tree.apps.clear()
