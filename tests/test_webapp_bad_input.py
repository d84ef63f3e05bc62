"""Bad input to the demo app, endpoint by endpoint: malformed JSON, wrong types,
missing and extra fields, huge bodies, SQL meta-characters in every field, path
segment and query string. The answer is a 4xx with a JSON ``{"error": ...}``,
never a 500 and never a traceback; meta-characters are stored as plain text.

One live server (loopback) serves the whole class; a hypothesis variant throws
random JSON values, path segments and query strings at it.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.parse
from typing import Any

import cherrypy
import pytest
from conftest import ROOT, read_only
from fuzz_settings import TIMEOUT, examples
from hypothesis import given, settings
from hypothesis import strategies as st
from webapp_fixtures import ADMIN, live_fixture, shared_live_fixture  # noqa: F401

from webapp import app as webapp_app
from webapp import bodies, validate
from webapp.tree import Api

NAME, INT, ID = "name", "int", "id"  # what a field must hold (webapp/validate.py)
# Every endpoint that reads a JSON body: path, then each field's kind and a valid value.
BODIES = {
    "/api/pages": {"name": (NAME, "page"), "cap": (INT, 5)},
    "/api/accounts": {"name": (NAME, "acct"), "balance": (INT, 100)},
    "/api/matches": {"name": (NAME, "match")},
    "/api/matches/1/close": {"winner": (NAME, "red")},
    "/api/bets": {"account": (ID, 1), "match": (ID, 1), "pick": (NAME, "red"), "stake": (INT, 1)},
    "/api/bets?async=1": {"account": (ID, 1), "match": (ID, 1), "pick": (NAME, "red"),
                          "stake": (INT, 1)},
}
# Every route with a path segment: (method, path with {} for the segment).
SEGMENTS = [("GET", "/api/pages/{}"), ("POST", "/api/pages/{}/view"), ("GET", "/pages/{}"),
            ("GET", "/api/accounts/{}"), ("GET", "/api/matches/{}"),
            ("POST", "/api/matches/{}/close"), ("GET", "/api/tickets/{}")]
# Every route, for query strings.
ROUTES = [("GET", "/"), ("GET", "/dashboard"), ("GET", "/api/stats"), ("GET", "/api/stats/history"),
          *[("POST", path) for path in BODIES],
          *[(method, path.format("x")) for method, path in SEGMENTS]]
HTML = ("/pages/", "/dashboard")  # pages for a browser: their own 404 is HTML
META = ["'", '"', ";", "--", "/*", "*/", "%", "%s", "\\", "`", "?", ":x", "@y", "$z",
        "x'); DROP TABLE pages; --", "' OR '1'='1", "1; DELETE FROM accounts", "é€😀",
        "\u202e", "\x00", "a\x00b", "../../etc/passwd", "<script>", "%00", "%27"]
TRACE = re.compile(r"Traceback|File \"|site-packages|\.py\b")


def assert_clean_error(reply: Any, *, allowed: tuple[int, ...] = ()) -> None:
    """A 4xx (or one of ``allowed``) with a JSON error message; never a 5xx or a traceback."""
    assert reply.status < 500, reply.text
    assert not TRACE.search(reply.text) and str(ROOT) not in reply.text, reply.text
    if reply.status in allowed:
        return
    assert 400 <= reply.status < 500, (reply.status, reply.text)
    assert reply.headers["Content-Type"] == "application/json", reply.text
    assert not reply.text.endswith(" "), "CherryPy's padding of short error bodies"
    body = json.loads(reply.text)
    assert isinstance(body["error"], str) and body["error"], body


def valid_body(path: str) -> dict[str, Any]:
    return {field: value for field, (_kind, value) in BODIES[path].items()}


def wrong_values(kind: str) -> list[Any]:
    """JSON values a field of ``kind`` must refuse with 400."""
    not_int = [None, True, False, 1.5, 1e300, "1", "", [], [1], {}, {"a": 1}]
    if kind == NAME:
        return [None, True, 0, 1.5, -1, [], ["a"], {}, {"a": "b"}, "", "x" * 65,
                "a\x00b", "tab\there", "\ud800", "line\nbreak"]
    if kind == ID:
        return [*not_int, 0, -1, 2**63, 2**64, -2**63 - 1, 10**30]
    return [*not_int, -1, 10**13, 2**63, -2**63 - 1, 10**30]


MALFORMED = [b"", b" ", b"{", b"}", b"nul", b"null", b"[]", b"[1, 2]", b'"text"', b"1", b"true",
             b'{"a": 1,}', b"{'name': 'x'}", b"\xff\xfe\xfa", b'{"a": NaN}', b'{"a": Infinity}',
             b'{"a": -Infinity}', b"[" * 30_000 + b"]" * 30_000,  # deep: RecursionError
             b'{"a": ' * 5000 + b"1" + b"}" * 5000,
             b'{"name": "\xc3\x28"}', b"\xef\xbb\xbf{}", b'{"a": "\\ud800"', b"\x00",
             b'{"a": 1} {"b": 2}', b"{" + b'"k": 1, ' * 5000 + b'"z": 2}']


def _post(server: Any, path: str, raw: bytes, **headers: str) -> Any:
    return server.request("POST", path, raw=raw, admin=True,
                          headers={"Content-Type": "application/json", **headers})


def _raw(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes on one connection; return everything the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


class TestBadInput:
    """One live server for all: every test here only adds rows no other test counts."""

    @pytest.mark.parametrize("path", list(BODIES))
    @pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
    def test_malformed_json_is_400(self, shared_live, path, raw):
        reply = _post(shared_live, path, raw)
        assert_clean_error(reply)
        assert reply.status == 400

    @pytest.mark.parametrize("path", list(BODIES))
    def test_a_wrong_type_or_range_in_any_field_is_400(self, shared_live, path):
        for field, (kind, _value) in BODIES[path].items():
            for wrong in wrong_values(kind):
                body = {**valid_body(path), field: wrong}
                reply = shared_live.post(path, body, admin=True)
                assert_clean_error(reply)
                assert reply.status == 400, (field, wrong, reply.text)
                assert field in reply.json["error"]  # it names the field

    @pytest.mark.parametrize("path", list(BODIES))
    def test_missing_extra_and_non_json_bodies_are_4xx(self, shared_live, path):
        for field in BODIES[path]:
            body = valid_body(path)
            del body[field]
            reply = shared_live.post(path, body, admin=True)
            assert_clean_error(reply)
            assert reply.status == 400 and field in reply.json["error"]
        for extra in ("admin", "id", "'; --", "\x00", "é", "zz-unknown"):
            reply = shared_live.post(path, {**valid_body(path), extra: 1}, admin=True)
            assert_clean_error(reply)
            assert reply.status == 400 and "unknown field" in reply.json["error"]
            if extra == "zz-unknown":
                assert extra not in reply.text  # the client's text is never echoed
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                      "application/jsonx", ""):
            reply = _post(shared_live, path, json.dumps(valid_body(path)).encode(),
                          **{"Content-Type": ctype})
            assert_clean_error(reply)
            assert reply.status == 415

    @pytest.mark.parametrize("path", list(BODIES))
    def test_a_5_mb_body_is_413_json_with_or_without_a_length(self, shared_live, path):
        huge = b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}'
        reply = _post(shared_live, path, huge)  # the server reads it all, then answers
        assert_clean_error(reply)
        assert reply.status == 413 and str(bodies.MAX_BODY) in reply.json["error"]
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(huge), huge)
        answer = _raw(shared_live.port, (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {ADMIN['Authorization']}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunked)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and b"application/json" in head
        assert json.loads(body)["status"] == 413

    def test_a_body_past_the_servers_limit_is_refused_before_the_app(self, shared_live):
        answer = _raw(shared_live.port, (
            "POST /api/pages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {bodies.DRAIN_MAX + 1}\r\n\r\n").encode())
        assert answer.startswith(b"HTTP/1.1 413 ") and not TRACE.search(answer.decode())

    @pytest.mark.parametrize("meta", META, ids=range(len(META)))
    def test_sql_meta_characters_in_every_field_are_text_or_a_4xx(self, shared_live, meta):
        server = shared_live
        account = server.post("/api/accounts", {"name": f"m{META.index(meta)}", "balance": 50},
                              admin=True)
        match = server.post("/api/matches", {"name": "meta"})
        assert (account.status, match.status) == (201, 201)
        ids = {"account": account.json["id"], "match": match.json["id"]}
        control = validate._CONTROL.search(meta) is not None
        for path in BODIES:
            for field, (kind, _value) in BODIES[path].items():
                if kind != NAME:
                    continue
                body = valid_body(path)
                body.update({k: v for k, v in ids.items() if k in body})
                body[field] = f"{field}{meta}"
                url = path.replace("/1/", f"/{ids['match']}/")
                reply = server.post(url, body, admin=True)
                assert_clean_error(reply, allowed=(200, 201, 202))
                if control:
                    assert reply.status == 400
                elif path in ("/api/pages", "/api/accounts", "/api/matches"):
                    assert reply.status == 201, reply.text
        if not control:  # the text came back exactly as sent
            assert server.get(f"/api/pages/{urllib.parse.quote('name' + meta, safe='')}").json[
                "name"] == "name" + meta
        for field in ("cap", "balance", "stake", "account", "match"):  # meta where a number goes
            path = next(p for p in BODIES if field in BODIES[p])
            reply = server.post(path, {**valid_body(path), field: meta}, admin=True)
            assert_clean_error(reply)
            assert reply.status == 400
        conn = read_only(server.db_path)
        try:
            tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'")
            assert tables.fetchall() == [(6,)]  # schema.sql's six, none dropped
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()

    @pytest.mark.parametrize("meta", META, ids=range(len(META)))
    def test_sql_meta_characters_in_every_path_segment_are_404(self, shared_live, meta):
        for method, path in SEGMENTS:
            url = path.format(urllib.parse.quote(f"zz{meta}", safe=""))
            body = ({"winner": "red"} if path.endswith("/close")
                    else {} if method == "POST" else None)
            reply = shared_live.request(method, url, body, admin=True)
            if reply.headers["Content-Type"].startswith("text/html"):  # /pages/<name>
                assert path.startswith(HTML) and reply.status == 404
                assert "<script>" not in reply.text and not TRACE.search(reply.text)
                continue
            assert_clean_error(reply)
            assert reply.status == 404, (url, reply.text)

    @pytest.mark.parametrize("meta", META, ids=range(len(META)))
    def test_sql_meta_characters_in_every_query_string_are_ignored_or_4xx(self, shared_live,
                                                                          meta):
        for method, path in ROUTES:
            sep = "&" if "?" in path else "?"
            for query in ({meta: meta}, {"async": meta}, {"n": meta}, {"x": [meta, meta]}):
                url = path + sep + urllib.parse.urlencode(query, doseq=True)
                body = valid_body(path) if path in BODIES else {} if method == "POST" else None
                reply = shared_live.request(method, url, body, admin=True)
                assert_clean_error(reply, allowed=(200, 201, 202) + (
                    (404, 410) if path.startswith(HTML) else ()))

    @pytest.mark.parametrize("url", [
        "/api/pages/x?name=y", "/api/accounts/1?ident=2", "/api/tickets/abc?segment=1",
        "/api/stats?self=1", "/dashboard?self=1", "/pages/x?name=1", "/?self=1",
        "/api/stats/history?self=1&n=2"])
    def test_a_query_name_like_a_parameter_is_no_500(self, shared_live, url):
        """Regression (bad input): ``?name=y`` beside ``/api/pages/<name>`` made the
        handler call a TypeError, so a 500. Names now travel in the resource, not
        in parameters: a query name cannot replace them."""
        reply = shared_live.get(url)
        assert_clean_error(reply, allowed=(200,) + ((404,) if url.startswith("/pages/") else ()))

    def test_a_query_name_never_replaces_the_name_in_the_path(self, shared_live):
        assert shared_live.post("/api/pages", {"name": "qx", "cap": 1}).status in (201, 409)
        reply = shared_live.get("/api/pages/qx?name=other")
        assert reply.status == 200 and reply.json["name"] == "qx"

    @pytest.mark.parametrize("query", ["n=1&n=2", "n=" + "9" * 5000, "n=0", "n=301", "n=-1",
                                       "n=1.5", "n=%00", "n="])
    def test_history_n_as_a_list_or_a_huge_number_is_400_not_500(self, shared_live,
                                                                        query):
        """Regression (bad input): ``?n=1&n=2`` (a list) and 5000 digits (int() refuses
        past 4300) reached the handler unchecked: 500."""
        reply = shared_live.get(f"/api/stats/history?{query}")
        assert_clean_error(reply)
        assert reply.status == 400

    def test_protocol_garbage_is_a_4xx_without_a_traceback(self, shared_live):
        close = b"Connection: close\r\n\r\n"  # so the answer ends with the connection
        for request in (b"GARBAGE\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n" + close,
                        b"POST /api/pages HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n" + close,
                        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n" + close,
                        b"BREW /api/pages HTTP/1.1\r\nHost: x\r\n" + close):
            answer = _raw(shared_live.port, request).decode("latin-1")
            assert re.match(r"HTTP/1\.[01] 4\d\d ", answer), answer
            assert not TRACE.search(answer), answer

    @pytest.mark.timeout(TIMEOUT)
    @settings(max_examples=examples(150))
    @given(data=st.data())
    def test_random_json_to_every_endpoint_is_never_a_500(self, shared_live, data):
        json_value = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                st.text(max_size=8), inner, max_size=3), max_leaves=8)
        path = data.draw(st.sampled_from(list(BODIES)))
        fields = list(BODIES[path])
        body = data.draw(st.one_of(
            json_value,
            st.fixed_dictionaries({f: json_value for f in fields}),
            st.fixed_dictionaries({f: st.just(v) | json_value for f, v in valid_body(path).items()},
                                  optional={"extra": json_value}),
        ))
        reply = shared_live.post(path, body, admin=True)
        assert_clean_error(reply, allowed=(200, 201, 202))
        method, segment_path = data.draw(st.sampled_from(SEGMENTS))
        segment = data.draw(st.text(min_size=1, max_size=70))
        query = data.draw(st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=3))
        url = segment_path.format(urllib.parse.quote(segment, safe=""))
        url += "?" + urllib.parse.urlencode(query) if query else ""
        reply = shared_live.request(method, url, {"winner": "x"} if method == "POST" else None,
                                    admin=True)
        assert_clean_error(reply, allowed=(200, 201, 202) + (
            (404, 410) if segment_path.startswith(HTML) else ()))


def _all_routes(root: Any) -> set[str]:
    """Every path of the mounted tree (``{}`` for a name), read from its objects."""
    paths = {"/pages/{}"}  # Root._cp_dispatch

    def walk(node: Any, prefix: str) -> None:
        for attr, child in vars(node).items():
            if attr.startswith("_"):
                continue
            if getattr(child, "exposed", False):
                paths.add(f"{prefix}/{attr}" if attr != "index" else prefix or "/")
                walk(child, f"{prefix}/{attr}")
            elif isinstance(child, Api):
                walk(child, f"{prefix}/{attr}")

    walk(root, "")
    for name, collection in root.api._collections.items():
        base = f"/api/{name}"
        paths.update([base] if collection.top is not None else [])
        paths.update([base + "/{}"] if collection.item is not None else [])
        paths.update(f"{base}/{{}}/{action}" for action in collection.actions)
    return paths


def test_every_route_is_covered_here(shared_live):
    """A new route must join the tables above, or this fails."""
    covered = {path.split("?")[0] for path in BODIES} | {path for _m, path in SEGMENTS}
    covered |= {path for _m, path in ROUTES}
    routes = _all_routes(cherrypy.tree.apps[""].root)
    assert "/api/pages/{}/view" in routes and "/api/stats/history" in routes
    missing = sorted(routes - covered - {"/metrics"})  # /metrics: its own test, no input
    assert not missing, missing


def test_production_config_limits_bodies():
    config = webapp_app.load_config(webapp_app.DEFAULT_CONFIG)
    assert config["global"]["server.max_request_body_size"] >= bodies.DRAIN_MAX
    assert config["global"].get("request.show_tracebacks", False) is False
    # A client that stops sending is answered within 5 s.
    assert 0 < config["global"]["server.socket_timeout"] <= 5


def test_an_unexpected_error_is_a_500_json_without_a_traceback(live):
    """The one 500 path: the database refuses something nobody foresaw."""
    assert cherrypy.tree.apps[""].config["/"]["request.show_tracebacks"] is False
    assert live.post("/api/pages", {"name": "p", "cap": 5}).status == 201
    live.db.execute("DROP TABLE page_views")
    live.db.execute("DROP TABLE pages")  # the view handler's UPDATE now fails
    reply = live.post("/api/pages/p/view")
    assert reply.status == 500 and reply.headers["Content-Type"] == "application/json"
    assert reply.json["error"] == "internal error (logged on the server)"
    assert not TRACE.search(reply.text) and "page_views" not in reply.text
