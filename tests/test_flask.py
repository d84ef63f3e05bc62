"""FlaskGateway under a live threaded WSGI server on loopback, with concurrent clients."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
import types
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import apsw
import flask
import pytest
from werkzeug.serving import make_server

from conftest import ROOT, WorkerBlocker, child_python, run_python, scalar
from sqlite_gateway import GatewayClosed, Overloaded, RequestTimeout
from sqlite_gateway.integrations.flask import FlaskGateway

_EXAMPLE_MARK = "# flask_pageviews.py"


def load_example() -> types.ModuleType:
    """The Flask example exactly as docs/guide.md shows it."""
    found = re.search(r"```python\n(" + re.escape(_EXAMPLE_MARK) + r".*?)```",
                      (ROOT / "docs" / "guide.md").read_text(), re.S)
    assert found, f"no python block starting with {_EXAMPLE_MARK!r} in docs/guide.md"
    module = types.ModuleType("flask_pageviews")
    exec(compile(found.group(1), "docs/guide.md:flask example", "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def serve(app):
    """A threaded werkzeug server for ``app`` on a free loopback port; always shut down."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def call(method, url):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


@pytest.fixture
def example(db_path):
    module = load_example()
    app = module.create_app(db_path)
    with serve(app) as url:
        yield module, app, url
    module.gateway.close(app)


def test_example_app_counts_views_up_to_the_cap_exactly(example, db_path):
    module, app, url = example
    assert call("POST", url + "/pages/home/25")[0] == 201
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call("POST", url + "/pages/home/views"), range(80)))
    assert Counter(status for status, _, _ in answers) == {201: 25, 409: 55}
    counted = sorted(json.loads(body)["views"] for status, _, body in answers if status == 201)
    assert counted == list(range(1, 26))  # each view saw its own count: no lost update
    status, _, body = call("GET", url + "/pages/home")
    assert (status, json.loads(body)) == (200, {"name": "home", "views": 25, "cap": 25})
    module.gateway.close(app)
    assert scalar(db_path, "SELECT count(*) FROM page_views") == 25


def test_example_app_answers_errors_as_json(example):
    _, _, url = example
    call("POST", url + "/pages/home/1")
    status, headers, body = call("POST", url + "/pages/home/1")  # UNIQUE conflict
    assert status == 409 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "conflict: UNIQUE constraint failed: pages.name",
                                "status": 409}
    status, headers, body = call("GET", url + "/pages/nowhere")
    assert status == 404 and json.loads(body) == {"error": "no such page"}


def _error_app(db_path, **config):
    ext = FlaskGateway()
    app = flask.Flask("errors")
    app.config.update(SQLITE_GATEWAY_PATH=db_path, **config)
    ext.init_app(app)
    raising = {"overloaded": Overloaded(10), "closed": GatewayClosed("closed for the test"),
               "timeout": RequestTimeout(0.5, started=True)}

    @app.get("/raise/<what>")
    def raise_(what):
        raise raising[what]

    @app.get("/bad-sql")
    def bad_sql():
        return {"n": ext.db.execute("SELEC secret_internals").scalar()}

    @app.post("/insert/<int:n>")
    def insert(n):
        ext.db.execute("CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY)")
        ext.db.execute("INSERT INTO t VALUES (?)", (n,))
        return {"n": n}, 201

    return ext, app


@pytest.mark.parametrize("path, status, retry", [
    ("/raise/overloaded", 503, "1"), ("/raise/closed", 503, "1"), ("/raise/timeout", 504, None),
    ("/bad-sql", 500, None)])
def test_gateway_errors_map_to_json_answers_without_internals(db_path, path, status, retry):
    ext, app = _error_app(db_path)
    with serve(app) as url:
        got, headers, body = call("GET", url + path)
    ext.close(app)
    assert got == status and headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == status
    assert headers.get("Retry-After") == retry
    assert b"Traceback" not in body and b"secret_internals" not in body


def test_a_full_queue_answers_503_at_once_and_the_accepted_commit(db_path):
    ext, app = _error_app(db_path, SQLITE_GATEWAY_QUEUE_SIZE=4)
    with serve(app) as url:
        call("POST", url + "/insert/0")  # creates the table
        blocker = WorkerBlocker(ext.db)  # ext.db from a thread with no app context
        try:
            with ThreadPoolExecutor(10) as pool:
                answers = [pool.submit(call, "POST", f"{url}/insert/{n}") for n in range(1, 11)]
                deadline = time.monotonic() + 30
                while sum(a.done() for a in answers) < 6 or ext.db.stats()["queued"] < 4:
                    assert time.monotonic() < deadline, "the refusals never came"
                    time.sleep(0.01)
                refused = [a.result() for a in answers if a.done()]
                assert [s for s, _, _ in refused] == [503] * 6
                assert all(h["Retry-After"] == "1" and json.loads(b)["status"] == 503
                           for _, h, b in refused)
                blocker.done()
                statuses = Counter(a.result()[0] for a in answers)
        finally:
            blocker.release.set()
    assert statuses == {503: 6, 201: 4}
    assert ext.db.execute("SELECT count(*) FROM t").scalar() == 5
    ext.close(app)


def test_config_keys_are_checked_at_init_app(db_path):
    for config, error in (({}, "SQLITE_GATEWAY_PATH"),
                          ({"SQLITE_GATEWAY_PATH": db_path, "SQLITE_GATEWAY_QUEUE": 5},
                           "unknown setting 'SQLITE_GATEWAY_QUEUE'"),
                          ({"SQLITE_GATEWAY_PATH": db_path, "SQLITE_GATEWAY_BATCH_MAX": 0},
                           "SQLITE_GATEWAY_BATCH_MAX must be a whole number >= 1")):
        app = flask.Flask("checked")
        app.config.update(config)
        with pytest.raises(ValueError, match=re.escape(error)):
            FlaskGateway(app)
    app = flask.Flask("text")  # values from the environment come as text
    app.config.update(SQLITE_GATEWAY_PATH=db_path, SQLITE_GATEWAY_QUEUE_SIZE="7",
                      SQLITE_GATEWAY_TIMEOUT="none")
    ext = FlaskGateway(app)
    with app.app_context():
        assert ext.db.core.queue.maxsize == 7 and ext.db.timeout is None
        assert app.extensions["sqlite_gateway"] is ext
    ext.close(app)


def test_a_factory_makes_the_apps_database(db_path):
    """``FlaskGateway(factory=...)`` opens the database it makes (what a benchmark
    passes to run the same app on a baseline), with the app's config options."""
    from benchmarks.baselines import BusyGateway
    app = flask.Flask("factory")
    app.config.update(SQLITE_GATEWAY_PATH=db_path, SQLITE_GATEWAY_TIMEOUT="9")
    ext = FlaskGateway(app, factory=BusyGateway,
                       setup=lambda db: db.execute("CREATE TABLE IF NOT EXISTS t(x)"))
    with app.app_context():
        db = ext.db
        assert isinstance(db, BusyGateway) and db.timeout == 9
        db.execute("INSERT INTO t VALUES (1)")
    ext.close(app)
    assert scalar(db_path, "SELECT count(*) FROM t") == 1
    with pytest.raises(TypeError, match="factory must be a callable"):
        FlaskGateway(factory="busy")


# A child process: the flask app on a threaded werkzeug server, a write-behind
# endpoint (202 once accepted), SIGINT ends it; the exit hook must drain the queue.
_SERVER = r"""
import signal, sys, time
from flask import Flask
from werkzeug.serving import make_server
from sqlite_gateway.integrations.flask import FlaskGateway

def setup(db):
    db.execute("CREATE TABLE IF NOT EXISTS hits(n INTEGER PRIMARY KEY)")

def slow_hit(conn, n):
    time.sleep(0.005)  # so that work is still queued when the server is stopped
    conn.execute("INSERT INTO hits VALUES (?)", (n,))

gateway = FlaskGateway(setup=setup)
app = Flask("shutdown")
app.config["SQLITE_GATEWAY_PATH"] = sys.argv[1]
gateway.init_app(app)

@app.post("/hit/<int:n>")
def hit(n):
    gateway.db.submit_transaction(slow_hit, n)
    return {"accepted": n}, 202

def stop(signum, frame):
    print("queued at stop:", gateway.db.stats()["queued"], file=sys.stderr, flush=True)
    raise KeyboardInterrupt

server = make_server("127.0.0.1", 0, app, threaded=True)
gateway.db  # open now, in this process
signal.signal(signal.SIGINT, stop)
print(server.server_port, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    server.server_close()
# no close() here: the extension's exit hook drains the gateway
"""


def test_stopping_the_server_process_loses_nothing_acknowledged(db_path):
    with child_python(_SERVER, db_path, stdout=-1, stderr=-1) as child:
        port = int(child.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda n: (n, call("POST", f"{url}/hit/{n}")[0]),
                                    range(300)))
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    acknowledged = {n for n, status in answers if status == 202}
    assert len(acknowledged) == 300
    queued_at_stop = int(re.search(r"queued at stop: (\d+)", err).group(1))
    assert queued_at_stop > 0, "the test stopped an idle server: it proves nothing"
    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        stored = {n for (n,) in conn.execute("SELECT n FROM hits")}
    finally:
        conn.close()
    assert stored == acknowledged


def test_a_forked_worker_opens_its_own_gateway(db_path):
    # Pre-forking servers load the app, then fork: a gateway opened before the
    # fork belongs to the parent (its worker thread is not in the child).
    proc = run_python(r"""
import os, sys
from flask import Flask
from sqlite_gateway.integrations.flask import FlaskGateway
ext = FlaskGateway(setup=lambda db: db.execute("CREATE TABLE IF NOT EXISTS t(pid)"))
app = Flask("forked")
app.config["SQLITE_GATEWAY_PATH"] = sys.argv[1]
ext.init_app(app)
parent_db = ext.db
pid = os.fork()
if pid == 0:
    db = ext.db
    db.execute("INSERT INTO t VALUES (?)", (os.getpid(),))
    ok = db is not parent_db and parent_db.state.value == "closed"  # the parent's, refused here
    ext.close(app)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
parent_db.execute("INSERT INTO t VALUES (?)", (os.getpid(),))
print(os.waitstatus_to_exitcode(status), parent_db.execute("SELECT count(*) FROM t").scalar())
""", db_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "2"]
