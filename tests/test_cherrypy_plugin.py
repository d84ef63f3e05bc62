"""GatewayPlugin on a bus of its own, and GatewayTool's error mapping under a live server."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import cherrypy
import pytest
from cherrypy.process.wspbus import Bus

from sqlite_gateway import Gateway, Overloaded, RequestTimeout
from sqlite_gateway.integrations.cherrypy import CHANNEL, GatewayPlugin, GatewayTool
from sqlite_gateway.gateway import State


def test_plugin_opens_on_start_publishes_and_drains_on_stop(db_path):
    bus = Bus()
    made = []
    plugin = GatewayPlugin(bus, db_path, setup=lambda db: made.append(db) or db.execute(
        "CREATE TABLE IF NOT EXISTS t(x)"), queue_size=500)
    plugin.subscribe()
    bus.start()
    try:
        db = bus.publish(CHANNEL)[0]
        assert isinstance(db, Gateway) and db is made[0] and db.state is State.RUNNING
        assert db.core.queue.maxsize == 500  # options reach the Gateway
        futures = [db.submit("INSERT INTO t VALUES (?)", (i,)) for i in range(100)]
        bus.graceful()  # close (drain) and reopen
        assert all(f.result(0).rowcount == 1 for f in futures)
        assert db.state is State.CLOSED
        again = bus.publish(CHANNEL)[0]
        assert again is not db and again.execute("SELECT count(*) FROM t").scalar() == 100
    finally:
        bus.stop()
    assert plugin.db is None and again.state is State.CLOSED
    assert bus.publish(CHANNEL) == [None]
    bus.exit()


def test_plugin_priorities_fit_around_cherrypys_own():
    assert 65 < GatewayPlugin.start.priority < 70  # after the Daemonizer, before Monitors
    assert GatewayPlugin.stop.priority > 50  # after helper jobs and the HTTP server stop


def test_plugin_without_a_path_says_how_to_set_it():
    plugin = GatewayPlugin(Bus())
    with pytest.raises(ValueError, match="engine.sqlite_gateway.path"):
        plugin.start()
    with pytest.raises(TypeError, match="unknown Gateway options: nope"):
        GatewayPlugin(Bus(), "x.db", nope=1)


def test_plugin_config_is_checked_by_the_shared_settings_parser(db_path):
    plugin = GatewayPlugin(Bus(), db_path)
    plugin.batch_max = 0  # as engine.sqlite_gateway.batch_max = 0 in a config file
    with pytest.raises(ValueError, match="engine.sqlite_gateway.batch_max must be a whole"):
        plugin.start()
    plugin.batch_max, plugin.timeout = "8", "none"  # text, as from an ini file
    plugin.start()
    try:
        assert plugin.db.timeout is None
    finally:
        plugin.stop()


def test_plugin_makes_its_database_with_the_factory_given(db_path):
    """``factory=`` replaces Gateway (the benchmarks' baselines), with the same options;
    a config cannot choose it: ``backend`` is not a setting."""
    from benchmarks.baselines import RetryGateway
    plugin = GatewayPlugin(Bus(), db_path, factory=RetryGateway, timeout=4)
    plugin.start()
    try:
        assert isinstance(plugin.db, RetryGateway) and plugin.db.timeout == 4
    finally:
        plugin.stop()
    with pytest.raises(TypeError, match="unknown Gateway options: backend"):
        GatewayPlugin(Bus(), db_path, backend="retry")
    with pytest.raises(TypeError, match="factory must be a callable"):
        GatewayPlugin(Bus(), db_path, factory="retry")
    plugin = GatewayPlugin(Bus(), db_path)
    with pytest.raises(ValueError, match="factory cannot be configured"):
        plugin.factory = RetryGateway  # as engine.sqlite_gateway.factory in a config file
    plugin.backend = "retry"  # as engine.sqlite_gateway.backend in an old config file
    with pytest.raises(ValueError, match="unknown setting engine.sqlite_gateway.backend"):
        plugin.start()
    assert plugin.db is None  # refused before anything was opened


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Errors:
    def __init__(self, hold: threading.Event) -> None:
        self.hold = hold

    @cherrypy.expose
    def ok(self):
        return str(cherrypy.request.db.execute("SELECT count(*) FROM t").scalar())

    @cherrypy.expose
    def conflict(self):
        cherrypy.request.db.execute("INSERT INTO t VALUES (1)")
        cherrypy.request.db.execute("INSERT INTO t VALUES (1)")

    @cherrypy.expose
    def overloaded(self):
        raise Overloaded(10)

    @cherrypy.expose
    def timeout(self):
        raise RequestTimeout(0.5, started=False)

    @cherrypy.expose
    def bug(self):
        raise ValueError("secret internals")

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["POST"])
    def add(self, x="body-less"):
        cherrypy.request.db.execute("INSERT INTO t VALUES (?)", (x,))
        return "added"


def _own_page(status, message, traceback, version):
    return "the app's own page"


@pytest.fixture
def live(db_path):
    """A live CherryPy server on loopback with the plugin and tool; always torn down."""
    port = _free_port()
    plugin = GatewayPlugin(cherrypy.engine, db_path, setup=lambda db: db.execute(
        "CREATE TABLE IF NOT EXISTS t(x UNIQUE)"))
    plugin.subscribe()
    cherrypy.tools.gw_test = GatewayTool()
    cherrypy.tools.gw_none = GatewayTool(channel="sqlite-gateway-nobody")  # no plugin answers
    cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": port,
                            "log.screen": False, "engine.autoreload.on": False,
                            "checker.on": False})
    cherrypy.tree.mount(_Errors(threading.Event()), "/", {"/": {"tools.gw_test.on": True}})
    cherrypy.tree.mount(_Errors(threading.Event()), "/none", {"/": {"tools.gw_none.on": True}})
    cherrypy.tree.mount(_Errors(threading.Event()), "/own", {"/": {
        "tools.gw_test.on": True, "error_page.default": _own_page}})
    cherrypy.engine.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cherrypy.engine.stop()
        plugin.unsubscribe()
        cherrypy.tree.apps.clear()
        cherrypy.server.httpserver = None  # the next start binds anew (another port)
        del cherrypy.tools.gw_test
        del cherrypy.tools.gw_none


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


@pytest.mark.parametrize("path, status", [
    ("/conflict", 409), ("/overloaded", 503), ("/timeout", 504), ("/bug", 500)])
def test_tool_maps_errors_to_http_as_json_without_tracebacks(live, path, status):
    code, headers, body = _get(live + path)
    assert code == status
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["status"] == status
    assert b"Traceback" not in body and b"secret internals" not in body
    if status == 503:
        assert headers["Retry-After"] == "1"
    # The JSON alone: not padded with spaces as CherryPy pads its own error pages.
    assert body == json.dumps(answer).encode() and int(headers["Content-Length"]) == len(body)


def test_tool_without_a_database_answers_json_503(live):
    code, headers, body = _get(live + "/none/ok")
    assert (code, headers["Content-Type"], headers["Retry-After"]) == (
        503, "application/json", "1")
    assert json.loads(body) == {"error": "the database is not available", "status": 503}


def test_tool_hands_the_gateway_to_handlers(live):
    code, _, body = _get(live + "/ok")
    assert (code, body) == (200, b"0")


def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as written (no header added, as curl does), return status and body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # Connection: close ends it
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_post_without_body_headers_has_an_empty_body_not_a_411(live):
    # What `curl -X POST URL` sends: neither Content-Length nor Transfer-Encoding.
    status, body = _raw(live, b"POST /add HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
    assert (status, body) == (200, b"added")
    # A body with its length is still read.
    status, body = _raw(live, b"POST /add HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close"
                              b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                              b"Content-Length: 5\r\n\r\nx=bod")
    assert (status, body) == (200, b"added")
    assert _get(live + "/ok")[2] == b"2"


def test_http_errors_on_the_tools_paths_are_json_without_tracebacks(live):
    code, headers, body = _get(live + "/add")  # a GET where only POST is allowed
    assert (code, headers["Content-Type"]) == (405, "application/json")
    assert json.loads(body) == {"error": "Specified method is invalid for this resource",
                                "status": 405}
    assert b"Traceback" not in body


def test_an_apps_own_error_page_is_kept(live):
    code, _, body = _get(live + "/own/add")
    assert (code, body.strip()) == (405, b"the app's own page")
