"""The demo app on a network, against the live loopback server: admin
credential, JSON-only state changes, no side effects on GET/HEAD, cross-site
requests, short and slow bodies, security headers, DNS rebinding, error bodies
that echo nothing, URL-encoded links; and a busy port (one line, no traceback)."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

import cherrypy
import pytest
from conftest import ROOT, read_only
from webapp_fixtures import ADMIN, ADMIN_TOKEN, free_port, live_app, live_fixture  # noqa: F401

from webapp import bodies, security


def _count(path, sql, params=()):
    conn = read_only(path)
    try:
        return conn.execute(sql, params).fetchall()[0][0]
    finally:
        conn.close()


def _basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- the admin credential ---------------------------------------------------------------

def test_admin_actions_need_the_admin_credential(live):
    account = {"name": "mallory", "balance": 10**9}
    for headers in ({}, _basic("admin", "wrong"), _basic("root", ADMIN_TOKEN),
                    {"Authorization": "Bearer " + ADMIN_TOKEN}, {"Authorization": "Basic !!"}):
        reply = live.post("/api/accounts", account, headers=headers)
        assert reply.status in (400, 401), reply.text
        assert reply.headers["Content-Type"] == "application/json"
    assert live.post("/api/accounts", account, headers={}).headers["WWW-Authenticate"].startswith(
        "Basic ")
    assert _count(live.db_path, "SELECT count(*) FROM accounts") == 0
    assert live.post("/api/accounts", account, admin=True).status == 201

    match = live.post("/api/matches", {"name": "final"}).json["id"]  # anyone may open one
    assert live.post(f"/api/matches/{match}/close", {"winner": "me"}).status == 401
    assert live.post(f"/api/matches/{match}/close", {"winner": "me"},
                     headers=_basic("admin", "nope")).status == 401
    assert live.get(f"/api/matches/{match}").json["status"] == "open"
    wrong_method = live.get(f"/api/matches/{match}/close")  # the 405 still comes first
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "POST"
    assert live.post(f"/api/matches/{match}/close", {"winner": "me"}, admin=True).status == 200


def test_the_admin_token_comes_from_config_then_environment_then_is_made_up(monkeypatch):
    monkeypatch.setenv(security.TOKEN_ENV, "from-env")
    assert security.admin_token("from-config") == ("from-config", False)
    assert security.admin_token(None) == ("from-env", False)
    monkeypatch.delenv(security.TOKEN_ENV)
    first, made_up = security.admin_token(None)
    assert made_up and len(first) >= 24 and security.admin_token(None)[0] != first
    check = security.AdminCheck("s3cret")
    assert check("realm", "admin", "s3cret") and not check("realm", "admin", "s3cre")
    assert not check("realm", "admin ", "s3cret")
    conf = (ROOT / "webapp" / "app.conf").read_text()
    assert "admin_token:" not in conf.replace("# (webapp.admin_token)", "")  # never stored here


# -- state changes: JSON POST only; GET and HEAD change nothing -----------------------------

def test_get_and_head_never_count_a_view(live):
    assert live.post("/api/pages", {"name": "p", "cap": 10}).status == 201
    for method in ("GET", "HEAD"):
        for path in ("/pages/p", "/api/pages/p", "/", "/api/pages/p/view"):
            reply = live.request(method, path)
            assert reply.status in (200, 405), (method, path, reply.status)
    assert live.get("/api/pages/p").json["views"] == 0
    assert _count(live.db_path, "SELECT count(*) FROM page_views") == 0
    assert live.post("/api/pages/p/view").json["views"] == 1


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", None])
def test_a_state_change_must_be_a_json_post(live, ctype):
    """What a form of another site can send (no preflight) is refused with 415."""
    assert live.post("/api/pages", {"name": "p", "cap": 10}).status == 201
    headers = {"Content-Type": ctype} if ctype else {}
    for path, raw in (("/api/pages/p/view", b"{}"), ("/api/pages", b'{"name": "q", "cap": 1}'),
                      ("/api/matches", b'{"name": "m"}')):
        reply = live.request("POST", path, raw=raw, headers=headers)
        assert reply.status == 415, reply.text
    assert live.get("/api/pages/p").json["views"] == 0
    assert _count(live.db_path, "SELECT count(*) FROM pages") == 1
    assert _count(live.db_path, "SELECT count(*) FROM matches") == 0


def test_a_cross_site_post_is_refused(live):
    assert live.post("/api/pages", {"name": "p", "cap": 10}).status == 201
    evil = [{"Origin": "http://evil.example", "Content-Type": "text/plain"},
            {"Origin": "http://evil.example"}, {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
            {"Origin": f"http://127.0.0.1:{live.port + 1}"}]
    for headers in evil:
        reply = live.request("POST", "/api/pages/p/view", raw=b"{}",
                             headers={"Content-Type": "application/json", **headers})
        assert reply.status in (403, 415), (headers, reply.text)
    assert live.get("/api/pages/p").json["views"] == 0
    same = live.post("/api/pages/p/view", headers={"Origin": f"http://127.0.0.1:{live.port}",
                                                   "Sec-Fetch-Site": "same-origin"})
    assert same.status == 200 and same.json["views"] == 1


# -- bodies shorter than their Content-Length --------------------------------------------

def _short_body(port, path="/api/pages", length=100, sent=b'{"name": "x"'):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {length}\r\n\r\n".encode() + sent)
    return s


def _answer(s):
    """The first answer on the socket: head, blank line, and Content-Length bytes."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + body[:_length(head)]


def _length(data):
    match = re.search(rb"(?i)content-length: *(\d+)", data)
    return int(match.group(1)) if match else 0


def test_a_short_body_is_answered_408_or_400_not_held(live):
    with _short_body(live.port) as s:  # the client goes silent
        head, _, body = _answer(s).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert json.loads(body)["status"] == 408 and b"name" not in body
    with _short_body(live.port) as s:  # the client closes its side
        s.shutdown(socket.SHUT_WR)
        head, _, body = _answer(s).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"shorter" in body, head + body
    assert _count(live.db_path, "SELECT count(*) FROM pages") == 0


def test_more_short_bodies_than_threads_do_not_starve_other_requests(tmp_path):
    """12 sockets with short bodies used to hold all 10 request threads (for the
    socket timeout, 10 s). Here the socket timeout is 60 s, so a thread such a
    body holds stays held for the whole test: yet a page, a read and a view
    are served, and every attacker gets an answer."""
    conf = {"server.socket_timeout": 60, "server.thread_pool": 10}
    with live_app(str(tmp_path / "app.db"), **conf) as live:
        assert live.post("/api/pages", {"name": "p", "cap": 10}).status == 201
        paths = ["/api/pages", "/api/pages/p/view", "/nothing", "/api/accounts"]  # 401 unread
        attackers = [_short_body(live.port, paths[i % len(paths)]) for i in range(14)]
        try:
            for path in ("/api/stats", "/", "/api/pages/p", "/pages/p"):
                reply = live.request("GET", path, timeout=20)  # would hang 60 s if starved
                assert reply.status == 200, (path, reply.text)
            view = live.post("/api/pages/p/view", timeout=20)
            assert view.status in (200, 503), view.text  # 503: every body slot is taken
            if view.status == 503:
                assert view.headers["Retry-After"] == "1"
        finally:
            for s in attackers:
                s.close()
        deadline = time.monotonic() + 30
        while live.post("/api/pages/p/view").status == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live.get("/api/pages/p").json["views"] >= 1


def _body_reader():
    """The mounted app's body reader (its ``reading`` count is the state tests wait on)."""
    return cherrypy.tree.apps[""].config["/"]["tools.json_in.processor"]


def _wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # bounded
        time.sleep(0.01)
    return predicate()


def test_a_trickled_body_is_cut_off_when_others_need_its_slot(tmp_path):
    """One byte at a time, never silent long enough for the socket timeout: the
    read is cut off past its deadline once a request finds no free slot."""
    with live_app(str(tmp_path / "app.db"), **{"webapp.body_slots": 1}) as live:
        with _short_body(live.port, length=10_000, sent=b"{") as trickle:
            # The server has taken the only slot for the trickle: a state, not an ordering
            # (posting at once raced the trickle's request thread for the slot).
            assert _wait_until(lambda: _body_reader().reading == 1)
            start = time.monotonic()  # after the server's deadline for it began
            refused = live.post("/api/pages", {"name": "a", "cap": 1})
            assert refused.status == 503  # the only slot is the trickle's, not yet overdue
            answer = b""
            trickle.settimeout(0.5)
            while not answer and time.monotonic() - start < 30:
                try:
                    trickle.sendall(b" ")
                    answer = trickle.recv(65536)
                except TimeoutError:
                    if time.monotonic() - start > bodies.BODY_DEADLINE_S:
                        live.post("/api/pages", {"name": "b", "cap": 1})  # needs the slot
                except OSError:
                    break
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert live.post("/api/pages", {"name": "c", "cap": 1}).status == 201


# -- headers, Host, error bodies, links ----------------------------------------------------

def test_every_answer_carries_the_security_headers(live):
    assert live.post("/api/pages", {"name": "p", "cap": 1}).status == 201
    html_pages = ["/", "/dashboard", "/pages/p", "/pages/nope"]
    api = ["/api/stats", "/api/pages/p", "/api/nothing", "/metrics"]
    replies = [live.get(p) for p in html_pages + api] + [
        live.request("DELETE", "/api/pages/p"), live.post("/api/accounts", {}),
        live.request("POST", "/api/pages", raw=b"x", headers={"Content-Type": "text/plain"}),
        live.get("/static/dashboard.js"), live.get("/static/style.css")]
    for reply in replies:
        assert reply.headers["X-Content-Type-Options"] == "nosniff", reply.status
        assert reply.headers["Cache-Control"], reply.status
    for reply in replies[:len(html_pages)]:
        policy = reply.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy and "<script>" not in reply.text
    for reply in replies[len(html_pages):len(html_pages) + len(api) + 3]:
        assert reply.headers["Cache-Control"] == "no-store"
        assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "10.0.0.1"])
def test_a_foreign_host_header_is_refused_on_loopback(live, host):
    """DNS rebinding: a name of the attacker's that resolves to 127.0.0.1."""
    assert live.post("/api/pages", {"name": "p", "cap": 5}).status == 201
    for method, path, body in (("GET", "/api/pages/p", None), ("POST", "/api/pages/p/view", {})):
        reply = live.request(method, path, body, headers={"Host": host})
        assert reply.status == 421 and host not in reply.text, reply.text
    assert live.get("/api/pages/p").json["views"] == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:9", "[::1]:8080",
                                  "127.0.0.2:1"])
def test_loopback_host_names_are_answered(live, host):
    assert live.request("GET", "/api/stats", headers={"Host": host}).status == 200


def test_allowed_hosts_adds_names(tmp_path):
    conf = {"webapp.allowed_hosts": ("demo.internal",)}
    with live_app(str(tmp_path / "app.db"), **conf) as live:
        assert live.request("GET", "/", headers={"Host": "demo.internal:8080"}).status == 200
        assert live.request("GET", "/", headers={"Host": "evil.example"}).status == 421


def test_error_bodies_never_echo_the_request(live):
    marker = "zq<x>\"'"
    quoted = urllib.parse.quote(marker, safe="")
    replies = [
        live.get(f"/{quoted}/{quoted}?{quoted}={quoted}"),
        live.get(f"/api/{quoted}"), live.get(f"/api/accounts/{quoted}"),
        live.request("PATCH", f"/api/pages/{quoted}"),
        live.post("/api/pages", {"name": "p", "cap": 1, marker: 1}),
        live.post("/api/pages", {"name": "p", "cap": marker}),
        live.request("POST", "/api/pages", raw=marker.encode(),
                     headers={"Content-Type": "application/json"}),
        live.request("POST", "/api/pages", raw=b"{}", headers={"Content-Type": marker}),
        live.get(f"/api/stats/history?n={quoted}"),
        live.request("GET", "/", headers={"Host": "zq-evil.example"}),
    ]
    for reply in replies:
        assert 400 <= reply.status < 500, reply.text
        assert "zq" not in reply.text and marker not in reply.text, reply.text
        body = reply.json
        assert reply.text == json.dumps(body), "padded or re-encoded"  # no 513-byte padding
        assert set(body) == {"error", "status"} and body["status"] == reply.status


NAMES = ["a?b#c", "x/y", "100%", "<b>&amp;", "sp ace", "é€", "..", "index", "default", "GET",
         "POST", "__class__", "__init__", "_cp_dispatch", "exposed", "favicon.ico", "view",
         "history", "self"]


def test_names_are_names_in_links_and_routes(live):
    """Links built from names are URL-encoded; names like Python attributes or
    HTTP methods are just names."""
    for name in NAMES:
        assert live.post("/api/pages", {"name": name, "cap": 5}).status == 201, name
    home = live.get("/").text
    links = set(re.findall(r'href="(/pages/[^"]*)"', home))
    assert len(links) == len(NAMES)
    for link in links:
        name = urllib.parse.unquote(html.unescape(link)[len("/pages/"):])
        assert name in NAMES and html.unescape(link) == "/pages/" + urllib.parse.quote(
            name, safe="")
        page = live.get(html.unescape(link))
        assert page.status == 200 and f"<h1>{html.escape(name)}</h1>" in page.text, link
        url = re.search(r'data-view-url="([^"]*)"', page.text).group(1)
        view = live.post(html.unescape(url))
        assert view.status == 200 and view.json["views"] == 1, (name, view.text)
        assert live.get(f"/api/pages/{urllib.parse.quote(name, safe='')}").json["name"] == name
    assert "a?b#c" not in re.sub(r"<[^>]*>", "", home).replace("a?b#c", "", 1)  # shown once


# -- metrics ----------------------------------------------------------------------------

def test_metrics_endpoint_scrapes_and_parses(live):
    from prometheus_client.parser import text_string_to_metric_families

    assert live.post("/api/pages", {"name": "p", "cap": 100}).status == 201
    for _ in range(5):
        assert live.post("/api/pages/p/view").status == 200
    reply = live.get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    stats = live.db.stats()

    def value(name, **labels):
        family = families[name.removesuffix("_total")]
        samples = [s for s in family.samples
                   if s.name == name and labels.items() <= s.labels.items()]
        assert len(samples) == 1, (name, samples)
        return samples[0].value

    assert families["sqlite_gateway_requests"].type == "counter"
    assert 6 <= value("sqlite_gateway_requests_total") <= stats["requests"]
    assert value("sqlite_gateway_commits_total") >= 6
    assert value("sqlite_gateway_queue_depth") == 0
    assert value("sqlite_gateway_state", sqlite_gateway_state="running") == 1
    assert value("sqlite_gateway_state", sqlite_gateway_state="closed") == 0
    p50 = value("sqlite_gateway_latency_seconds", quantile="0.5")
    assert 0 < p50 <= value("sqlite_gateway_latency_seconds", quantile="0.99")
    assert "recent" in families["sqlite_gateway_latency_seconds"].documentation


# -- python -m webapp: the admin token printed once; a busy port in one line -------------

def _run_webapp(*args, env=None, timeout=30):
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "webapp", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT), check=False)


def test_a_busy_port_is_one_line_and_a_non_zero_exit(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run_webapp("--port", str(port), "--db", str(tmp_path / "x.db"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_without_a_token_one_is_made_and_printed_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != security.TOKEN_ENV}
    env["PYTHONPATH"] = str(ROOT)
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out, subprocess.Popen(
            [sys.executable, "-m", "webapp", "--port", str(port), "--db", str(tmp_path / "t.db")],
            env=env, cwd=str(tmp_path), stdout=out, stderr=subprocess.STDOUT, text=True) as child:
        try:
            deadline = time.monotonic() + 30
            while "Bus STARTED" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            printed = re.findall(r"admin token for this run .*?: (\S+)", log.read_text())
            assert len(printed) == 1, log.read_text()
            from webapp_fixtures import Live
            live = Live(f"http://127.0.0.1:{port}", port, str(tmp_path / "t.db"))
            body = {"name": "a", "balance": 1}
            assert live.post("/api/accounts", body).status == 401
            assert live.post("/api/accounts", body, headers=_basic("admin", printed[0])
                             ).status == 201
        finally:
            child.terminate()
            child.wait(30)
    assert len(re.findall("admin token", log.read_text())) == 1
