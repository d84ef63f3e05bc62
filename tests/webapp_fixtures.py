"""The demo app on a live loopback server, and a small HTTP client for tests.

CherryPy's engine, tree and config are process-wide singletons: ``live_app``
always stops the engine and undoes ``build_app`` (plugins, tools, mounted
apps, config), however the test ends, so the next test starts clean.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cherrypy
import pytest

from sqlite_gateway import Gateway
from sqlite_gateway.integrations.cherrypy import CHANNEL
from webapp import app as webapp_app

_HELPERS_OFF = {f"helpers.{job}.on": False for job in ("rollup", "settlement", "maintenance")}
ADMIN_TOKEN = "test-admin-token"  # the tests pass it explicitly (webapp.admin_token)
ADMIN = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Live:
    url: str
    port: int
    db_path: str

    @property
    def db(self) -> Gateway:
        """The gateway the engine's plugin opened (what the handlers use)."""
        dbs = [db for db in cherrypy.engine.publish(CHANNEL) if db is not None]
        assert dbs, "the gateway is not running"
        return dbs[0]

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30,
                admin: bool = False) -> Reply:
        """One request on a fresh connection; ``body`` goes as JSON, ``raw`` as is;
        ``admin`` adds the admin credential."""
        headers = {**(ADMIN if admin else {}), **(headers or {})}
        if body is not None:
            raw = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=raw, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            return Reply(response.status, response.headers, text)
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        """A JSON POST; without a body it sends ``{}`` (a page view takes no fields)."""
        if body is None and kwargs.get("raw") is None:
            body = {}
        return self.request("POST", path, body, **kwargs)


@contextlib.contextmanager
def live_app(db_path: str, helpers: bool = False, factory: Any = None,
             **global_conf: Any) -> Iterator[Live]:
    """Build the app from webapp/app.conf on a free port and a tmp database,
    start the engine, yield; always stop and clean up. ``global_conf`` adds or
    overrides [global] keys (e.g. ``{"engine.sqlite_gateway.queue_size": 2}``
    via ``**{...}``); the helper jobs are off unless ``helpers=True``; ``factory``
    makes the database instead of a Gateway (see ``build_app``)."""
    port = free_port()
    config = webapp_app.load_config(webapp_app.DEFAULT_CONFIG)
    overrides = {"server.socket_port": port, "server.socket_host": "127.0.0.1",
                 "log.screen": False, "engine.autoreload.on": False,
                 "webapp.admin_token": ADMIN_TOKEN, "webapp.sample_interval": 0.2}
    if not helpers:
        overrides.update(_HELPERS_OFF)
    config["global"].update(overrides)
    config["global"].update(global_conf)
    try:
        webapp_app.build_app(config, db_path=db_path, factory=factory)
        cherrypy.engine.start()
        assert cherrypy.engine.state == cherrypy.engine.states.STARTED, "engine did not start"
        yield Live(f"http://127.0.0.1:{port}", port, db_path)
    finally:
        cherrypy.engine.stop()
        webapp_app.teardown()
        cherrypy.server.httpserver = None  # the next start binds anew (another port)
        cherrypy.config.reset()


@pytest.fixture(name="live")
def live_fixture(tmp_path: Any) -> Iterator[Live]:
    """The demo app, live on loopback, on a fresh database; helper jobs off."""
    with live_app(str(tmp_path / "app.db")) as server:
        yield server


@pytest.fixture(name="shared_live", scope="class")
def shared_live_fixture(tmp_path_factory: Any) -> Iterator[Live]:
    """One live app for a test class whose tests do not care what the others
    wrote (bad input, 404/405): a server per test costs about 0.5 s. Class
    scope, since the engine is a singleton: no other app may run meanwhile."""
    with live_app(str(tmp_path_factory.mktemp("shared") / "app.db")) as server:
        yield server
