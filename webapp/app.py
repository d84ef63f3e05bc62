"""Build the demo app: the gateway plugin and tool, the helper jobs, the URL tree.

``build_app(config)`` wires everything on the process-wide ``cherrypy.engine``
and mounts the app on ``cherrypy.tree``; ``teardown()`` undoes it (for tests,
which build several apps in one process). Starting and stopping is the
engine's business: ``engine.start()`` opens the database (the plugin runs
schema.sql) and starts the helper jobs; ``engine.stop()`` stops the HTTP
server, then the jobs, then drains and closes the gateway.

Everything is CherryPy's public idiom: ``MethodDispatcher`` over a tree of
resources (tree.py), ``tools.json_in`` / ``tools.json_out`` for JSON,
``error_page.default`` for JSON errors, ``tools.staticdir`` for the pages'
script and style, and two config namespaces of the app's own, registered as
CherryPy's own are: ``helpers.<job>.<setting>`` configures the helper jobs,
``webapp.<setting>`` the app (see app.conf).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cherrypy
from cherrypy.lib import reprconf

from helpers.maintenance import MaintenanceJob
from helpers.replication import ReplicationPlugin
from helpers.rollup import RollupJob
from helpers.settlement import SettlementJob
from sqlite_gateway.integrations.cherrypy import GatewayPlugin, install
from sqlite_gateway.integrations.settings import DatabaseFactory

from . import bets, bodies, dashboard, home, pageviews, security
from .tree import Api, Root

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "app.conf"
SCHEMA = HERE / "schema.sql"
# helpers.<name>.*: each a plugin class of helpers/, and whether it runs unless told.
JOBS: dict[str, tuple[type[Any], bool]] = {
    "rollup": (RollupJob, True),
    "settlement": (SettlementJob, True),
    "maintenance": (MaintenanceJob, True),
    "replication": (ReplicationPlugin, False),  # needs the litestream binary: on when asked
}
# webapp.<name>: the app's own settings and their defaults.
APP_SETTINGS: dict[str, Any] = {
    "admin_token": None,     # else $SQLITE_GATEWAY_ADMIN_TOKEN, else a random one, printed
    "allowed_hosts": (),     # Host names answered besides loopback ones (behind a proxy)
    "body_slots": None,      # threads that may read a body at once; None: half the pool
    "sample_interval": 1.0,  # seconds between two dashboard samples
}

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


class Namespace:
    """A config namespace handler: CherryPy calls it with ``(key, value)`` for
    each ``<prefix>.<key>`` of a config update; it keeps them in ``values``."""

    def __init__(self, prefix: str, known: set[str] | None = None, nested: bool = False) -> None:
        self.prefix = prefix
        self.known = known
        self.nested = nested
        self.values: dict[str, Any] = {}

    def __call__(self, key: str, value: Any) -> None:
        name, _, setting = key.partition(".")
        if self.known is not None and name not in self.known:
            raise ValueError(f"unknown setting {self.prefix}.{key}; known: "
                             f"{', '.join(sorted(self.known))}")
        if self.nested:
            if not setting:
                raise ValueError(f"{self.prefix}.{key} needs a setting: "
                                 f"{self.prefix}.{name}.<setting>")
            self.values.setdefault(name, {})[setting] = value
        else:
            self.values[key] = value


def _subscribe_jobs(engine: Any, settings: dict[str, dict[str, Any]]) -> list[Any]:
    jobs = []
    for name, (plugin_class, default_on) in JOBS.items():
        options = dict(settings.get(name, {}))
        if not options.pop("on", default_on):
            continue
        job = plugin_class(engine, **options)
        job.subscribe()
        jobs.append(job)
    return jobs


def build_app(config: str | Path | dict[str, Any] | None = None,
              db_path: str | None = None,
              factory: DatabaseFactory | None = None) -> cherrypy.Application:
    """Wire the demo app on ``cherrypy.engine`` and mount it at ``/``.

    Args:
        config: app.conf's path, or the same as a dict (see :func:`load_config`).
        db_path: the database file; overrides ``engine.sqlite_gateway.path``.
        factory: makes the database from the path and options instead of a
            Gateway (the benchmarks pass their baselines to run the same app the
            old ways); never configuration.

    Returns:
        the mounted application. Call ``cherrypy.engine.start()`` next.

    Raises:
        ValueError: an unknown ``helpers.*`` or ``webapp.*`` setting.
    """
    if _installed:
        raise RuntimeError("build_app() was already called: call teardown() first")
    conf = load_config(config)
    global_conf = conf.pop("global", {})
    engine = cherrypy.engine
    plugin: GatewayPlugin = install(engine, setup=create_schema,
                                    **({} if factory is None else {"factory": factory}))
    _installed["plugin"] = plugin
    helpers_ns = Namespace("helpers", set(JOBS), nested=True)
    webapp_ns = Namespace("webapp", set(APP_SETTINGS))
    cherrypy.config.namespaces["helpers"] = helpers_ns
    cherrypy.config.namespaces["webapp"] = webapp_ns
    _installed["namespaces"] = ("helpers", "webapp")
    # Request heads must arrive within server.socket_timeout in all (heads.py).
    global_conf.setdefault("server.instance", "webapp.heads.HeadTimedServer")
    # engine.sqlite_gateway.* reaches the plugin, helpers.* and webapp.* the handlers above.
    cherrypy.config.update(global_conf)
    if db_path is not None:
        plugin.path = db_path
    jobs = helpers_ns.values
    if jobs.get("replication", {}).get("on") is True:
        # Litestream owns checkpointing: no autocheckpoint on the writer, no
        # checkpoint in the maintenance job (unless the config says otherwise).
        jobs.setdefault("maintenance", {}).setdefault("checkpoint", False)
        if plugin.autocheckpoint is None:
            plugin.autocheckpoint = 0
    _installed["jobs"] = _subscribe_jobs(engine, jobs)
    settings = {**APP_SETTINGS, **webapp_ns.values}
    sampler = dashboard.Sampler(engine, settings["sample_interval"])
    sampler.subscribe()
    _installed["sampler"] = sampler

    token, made_up = security.admin_token(settings["admin_token"])
    if made_up:
        print(f"webapp: admin token for this run (HTTP Basic, user {security.ADMIN_USER!r}): "
              f"{token}  (set {security.TOKEN_ENV} to choose it)", file=sys.stderr, flush=True)
    threads = int(cherrypy.config.get("server.thread_pool", 10))
    slots = settings["body_slots"] or max(1, threads // 2)
    security.register_tools()
    app_conf: dict[str, dict[str, Any]] = {
        "/": {
            "request.dispatch": cherrypy.dispatch.MethodDispatcher(),
            "error_page.default": security.json_error_page,
            "request.show_tracebacks": False,
            "request.show_mismatched_params": False,
            "tools.trailing_slash.on": False,
            "tools.db.on": True,
            "tools.guard.on": True,
            "tools.guard.allowed_hosts": tuple(settings["allowed_hosts"]),
            "tools.headers.on": True,
            # Bodies are read only by the POSTs marked json_post (security.py), as
            # JSON, by bodies.BodyReader (bounded, timed, a few threads at once).
            "request.process_request_body": False,
            "tools.json_in.content_type": "application/json",
            "tools.json_in.processor": bodies.BodyReader(slots),
            # tools.admin is switched on per method (security.admin_only).
            "tools.admin.realm": security.REALM,
            "tools.admin.checkpassword": security.AdminCheck(token),
        },
        "/api": {"tools.json_out.on": True},
        "/static": {"tools.staticdir.on": True, "tools.staticdir.dir": str(HERE / "static"),
                    "tools.db.on": False},
    }
    for section, values in conf.items():
        app_conf.setdefault(section, {}).update(values)
    tickets = bets.TicketBook()
    api = Api({"pages": pageviews.collection(), **bets.collections(tickets)},
              stats=dashboard.Stats(sampler), bets=bets.BetList(tickets))
    root = Root(home.Home(), api, pageviews.PageHtml,
                dashboard=dashboard.DashboardPage(), metrics=dashboard.Metrics())
    app = cherrypy.tree.mount(root, "/", app_conf)
    _installed["app"] = app
    return app


def teardown() -> None:
    """Undo build_app (after ``engine.stop()``): unsubscribe, unmount, forget."""
    for job in _installed.pop("jobs", []):
        job.unsubscribe()
    sampler = _installed.pop("sampler", None)
    if sampler is not None:
        sampler.unsubscribe()
    plugin = _installed.pop("plugin", None)
    if plugin is not None:
        plugin.unsubscribe()
        if getattr(cherrypy.engine, "sqlite_gateway", None) is plugin:
            del cherrypy.engine.sqlite_gateway
    if hasattr(cherrypy.tools, "db"):
        del cherrypy.tools.db
    for name in _installed.pop("namespaces", ()):
        cherrypy.config.namespaces.pop(name, None)
    _installed.pop("app", None)
    cherrypy.tree.apps.clear()
    cherrypy.server.instance = None  # set through config by build_app; config.reset() keeps it
