"""The demo app (webapp/) under a live loopback server: invariants under load,
input checking, overload, graceful stop."""

from __future__ import annotations

import collections
import signal
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import apsw
import cherrypy
import pytest
from conftest import ROOT, WorkerBlocker, child_python, read_only
from webapp_fixtures import free_port, live_app, live_fixture, shared_live_fixture  # noqa: F401

def _count(path, sql, params=()):
    conn = read_only(path)
    try:
        return conn.execute(sql, params).fetchall()[0][0]
    finally:
        conn.close()


def _wait_tickets(live, tickets, seconds=30):
    """Poll each ticket until it is no longer pending (bounded); return the answers."""
    answers = {}
    deadline = time.monotonic() + seconds
    while len(answers) < len(tickets) and time.monotonic() < deadline:
        for t in tickets:
            if t not in answers:
                r = live.get(f"/api/tickets/{t}")
                assert r.status == 200, r.text
                if r.json["status"] != "pending":
                    answers[t] = r.json
        if len(answers) < len(tickets):
            time.sleep(0.05)
    assert len(answers) == len(tickets), "some tickets stayed pending"
    return answers


def _setup_betting(live, balance, match_name="final"):
    account = live.post("/api/accounts", {"name": "alice", "balance": balance}, admin=True)
    match = live.post("/api/matches", {"name": match_name})
    assert (account.status, match.status) == (201, 201)
    return account.json["id"], match.json["id"]


# -- page views ---------------------------------------------------------------

def _twenty_viewers_hit_a_cap_of_150_exactly(live):
    assert live.post("/api/pages", {"name": "home", "cap": 150}).status == 201

    def viewer(_):
        return [live.post("/api/pages/home/view").status for _ in range(20)]

    with ThreadPoolExecutor(20) as pool:
        statuses = collections.Counter(s for batch in pool.map(viewer, range(20)) for s in batch)
    assert statuses == {200: 150, 410: 250}


def test_concurrent_page_views_hit_the_cap_exactly(live):
    _twenty_viewers_hit_a_cap_of_150_exactly(live)
    assert live.get("/api/pages/home").json == {"name": "home", "views": 150, "cap": 150}
    live.db.flush()  # each view's access-log row is posted (write-behind): the barrier
    assert _count(live.db_path, "SELECT count(*) FROM page_views WHERE page = ?", ("home",)) == 150
    capped = live.post("/api/pages/home/view")
    assert (capped.status, capped.json["error"]) == (410, "cap reached")


def test_pages_create_conflict_unknown_and_html(live):
    assert live.post("/api/pages", {"name": "p", "cap": 1}).status == 201
    again = live.post("/api/pages", {"name": "p", "cap": 5})
    assert (again.status, again.json["error"]) == (409, "page exists")
    assert live.post("/api/pages/nope/view").status == 404
    assert live.get("/api/pages/nope").status == 404
    page = live.get("/pages/p")  # shows the count; its script posts the view
    assert page.status == 200 and '<span id="views">0</span> of <span id="cap">1</span>' in (
        page.text)
    assert page.headers["Content-Type"].startswith("text/html")
    assert 'data-view-url="/api/pages/p/view"' in page.text
    assert live.post("/api/pages/p/view").status == 200
    assert '<span id="views">1</span>' in live.get("/pages/p").text
    assert live.post("/api/pages/p/view").status == 410
    assert live.get("/pages/nope").status == 404
    index = live.get("/")
    assert index.status == 200 and 'href="/dashboard"' in index.text and "/pages/p" in index.text


# -- bets ---------------------------------------------------------------------

def test_concurrent_bets_never_overdraw(live):
    account, match = _setup_betting(live, 1000)

    def bettor(i):
        out = []
        for j in range(10):
            path = "/api/bets?async=1" if (i + j) % 2 else "/api/bets"
            out.append(live.post(path, {"account": account, "match": match, "pick": "home",
                                        "stake": 17}))
        return out

    with ThreadPoolExecutor(16) as pool:
        replies = [r for batch in pool.map(bettor, range(16)) for r in batch]
    assert {r.status for r in replies} <= {201, 202, 422}, [r.text for r in replies]
    refused = [r for r in replies if r.status == 422]
    assert all(r.json["error"] == "insufficient balance" for r in refused)
    tickets = [r.json["ticket"] for r in replies if r.status == 202]
    answers = _wait_tickets(live, tickets)
    assert {a["status"] for a in answers.values()} <= {"committed", "refused"}
    assert all(a["reason"] == "insufficient balance" for a in answers.values()
               if a["status"] == "refused")
    balance = live.get(f"/api/accounts/{account}").json["balance"]
    staked = _count(live.db_path, "SELECT coalesce(sum(stake), 0) FROM bets WHERE account = ?",
                    (account,))
    assert balance >= 0 and staked + balance == 1000
    placed = sum(r.status == 201 for r in replies) + sum(
        a["status"] == "committed" for a in answers.values())
    assert placed == 1000 // 17 == staked // 17  # every unit of money was used, no more


def test_bets_before_a_close_count_and_bets_after_it_are_refused(live):
    account, match = _setup_betting(live, 10_000)
    before = [live.post("/api/bets?async=1", {"account": account, "match": match,
                                              "pick": "red" if i % 2 else "blue", "stake": 10})
              for i in range(30)]
    assert all(r.status == 202 for r in before)
    assert all(r.json["status_url"] == f"/api/tickets/{r.json['ticket']}" for r in before)
    closed = live.post(f"/api/matches/{match}/close", {"winner": "red"}, admin=True)
    assert closed.status == 200 and closed.json["closed"] is True
    # The close was a barrier: every ticket accepted before it is already final.
    for r in before:
        assert live.get(r.json["status_url"]).json["status"] == "committed"
    after = [live.post("/api/bets?async=1", {"account": account, "match": match, "pick": "red",
                                             "stake": 10}) for _ in range(5)]
    answers = _wait_tickets(live, [r.json["ticket"] for r in after])
    assert all(a == {"status": "refused", "reason": "match is closed", "bet": None}
               for a in answers.values())
    sync = live.post("/api/bets", {"account": account, "match": match, "pick": "red", "stake": 1})
    assert (sync.status, sync.json["error"]) == (409, "match is closed")
    shown = live.get(f"/api/matches/{match}").json
    assert shown["bets"] == 30 and shown["winner"] == "red" and shown["status"] != "open"
    assert live.get(f"/api/accounts/{account}").json["balance"] >= 10_000 - 300
    again = live.post(f"/api/matches/{match}/close", {"winner": "blue"}, admin=True)
    assert again.status == 409
    assert live.post("/api/matches/999/close", {"winner": "x"}, admin=True).status == 404


def test_close_settles_the_bets_placed_before_it(live):
    account, match = _setup_betting(live, 1000)
    for pick in ("red", "blue", "red"):
        assert live.post("/api/bets", {"account": account, "match": match, "pick": pick,
                                       "stake": 100}).status == 201
    closed = live.post(f"/api/matches/{match}/close", {"winner": "red"}, admin=True)
    assert closed.status == 200 and closed.json["settled"] == {"matches": 1, "bets": 3}
    assert live.get(f"/api/matches/{match}").json["status"] == "settled"
    assert live.get(f"/api/accounts/{account}").json["balance"] == 1000 - 300 + 2 * 200
    unpaid = _count(live.db_path, "SELECT count(*) FROM bets WHERE match = ? AND payout IS NULL",
                    (match,))
    assert unpaid == 0


def test_tickets_unknown_and_malformed_are_404(live):
    assert live.get("/api/tickets/" + "0" * 32).status == 404
    assert live.get("/api/tickets/not-a-ticket").status == 404


# -- bad input ----------------------------------------------------------------

_JSON = {"Content-Type": "application/json"}
BAD = [
    ("/api/pages", b'{"name": "x", "cap": ', _JSON, 400),
    ("/api/pages", b"\xff\xfe\xfa", _JSON, 400),
    ("/api/pages", b"[1, 2]", _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": NaN}', _JSON, 400),
    ("/api/pages", b"[" * 20000 + b"]" * 20000, _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": "10"}', _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": 1.5}', _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": true}', _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": -1}', _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": 1000000001}', _JSON, 400),
    ("/api/pages", b'{"name": "", "cap": 1}', _JSON, 400),
    ("/api/pages", b'{"name": "' + b"a" * 65 + b'", "cap": 1}', _JSON, 400),
    ("/api/pages", b'{"name": "a\\u0000b", "cap": 1}', _JSON, 400),
    ("/api/pages", b'{"name": "\\ud800", "cap": 1}', _JSON, 400),
    ("/api/pages", b'{"name": 5, "cap": 1}', _JSON, 400),
    ("/api/pages", b'{"cap": 1}', _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": 1, "admin": true}', _JSON, 400),
    ("/api/pages", b'{"name": "x", "cap": 1}', {"Content-Type": "text/plain"}, 415),
    ("/api/pages", b"name=x&cap=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("/api/pages", b'{"name": "' + b"x" * 100_000 + b'"}', _JSON, 413),
    ("/api/accounts", b'{"name": "a", "balance": 1000000000001}', _JSON, 400),
    ("/api/accounts", b'{"name": "a", "balance": 99999999999999999999999}', _JSON, 400),
    ("/api/bets", b'{"account": 0, "match": 1, "pick": "a", "stake": 1}', _JSON, 400),
    ("/api/bets", b'{"account": 1, "match": 1, "pick": "a", "stake": 0}', _JSON, 400),
    ("/api/bets", b'{"account": 1, "match": 1, "pick": "a", "stake": 1000000001}', _JSON, 400),
    ("/api/bets", b'{"account": 1, "match": 9223372036854775808, "pick": "a", "stake": 1}',
     _JSON, 400),
    ("/api/bets", b'{"account": 1, "match": 1, "pick": ["a"], "stake": 1}', _JSON, 400),
    ("/api/bets", b'{"account": 1, "match": 1, "pick": "a", "stake": 1}', _JSON, 422),
    ("/api/bets?async=maybe", b'{"account": 1, "match": 1, "pick": "a", "stake": 1}', _JSON,
     400),
    ("/api/matches", b"", _JSON, 400),
    ("/api/matches", b"", {}, 415),
]


class TestOneSharedServer:
    """Input checking and routing: one server for the whole class."""

    @pytest.mark.parametrize("path, raw, headers, status", BAD)
    def test_bad_input_gets_a_4xx_json_answer_never_a_500(self, shared_live, path, raw, headers,
                                                          status):
        server = shared_live
        r = server.request("POST", path, raw=raw, headers=headers, admin=True)
        assert r.status == status, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert isinstance(r.json["error"], str) and "Traceback" not in r.text

    @pytest.mark.parametrize("name", ["x'); DROP TABLE pages; --", "' OR '1'='1", 'a"b;--',
                                      "%s %d ?1 :x @y $z", "é€😀", "../../etc/passwd"])
    def test_sql_meta_characters_are_just_text(self, shared_live, name):
        server = shared_live
        r = server.post("/api/pages", {"name": name, "cap": 3})
        assert r.status == 201, r.text
        assert server.post("/api/accounts", {"name": name, "balance": 5}, admin=True).status == 201
        assert _count(server.db_path, "SELECT count(*) FROM pages WHERE name = ?", (name,)) == 1
        tables = "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        assert _count(server.db_path, tables) == 6  # schema.sql's six, none dropped

    @pytest.mark.parametrize("path", ["/api/accounts/abc", "/api/accounts/0", "/api/accounts/-1",
                                      "/api/accounts/99999999999999999999", "/api/matches/1.5",
                                      "/api/accounts/12345", "/api/pages/" + "a" * 65,
                                      "/api/nothing", "/nothing/at/all", "/api/pages/a/b/c"])
    def test_unknown_paths_are_404_json(self, shared_live, path):
        r = shared_live.get(path)
        assert r.status == 404 and r.headers["Content-Type"] == "application/json"
        assert "error" in r.json

    @pytest.mark.parametrize("method, path, allow", [
        ("DELETE", "/api/pages/x", "GET, HEAD"), ("GET", "/api/bets", "POST"),
        ("PUT", "/api/pages", "POST"), ("GET", "/api/pages/x/view", "POST"),
        ("POST", "/dashboard", "GET, HEAD"), ("GET", "/api/matches/1/close", "POST")])
    def test_wrong_method_is_405_with_allow(self, shared_live, method, path, allow):
        r = shared_live.request(method, path)
        assert r.status == 405 and r.headers["Allow"] == allow
        assert r.headers["Content-Type"] == "application/json" and "error" in r.json


def _wait_samples(live, count, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples = live.get(f"/api/stats/history?n={count}").json["samples"]
        if len(samples) >= count:
            return samples
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} samples after {seconds} s")


def test_stats_history_checks_n(live):
    assert live.get("/api/stats/history?n=abc").status == 400
    assert live.get("/api/stats/history?n=100000").status == 400
    samples = _wait_samples(live, 2)
    assert len(samples) == 2 and samples[-1]["commits"] >= 0 and "commits_per_s" in samples[-1]


def test_the_dashboard_figures_come_from_the_server_not_from_viewers(live):
    """A second viewer changed the commits-per-second figure: each GET /api/stats
    took a sample. Now the server samples on its own; viewers only read."""
    assert live.post("/api/pages", {"name": "hot", "cap": 1000}).status == 201
    before = _wait_samples(live, 3)
    for _ in range(30):  # 30 viewers' polls in far less than 30 sampling intervals
        assert live.get("/api/stats").status == 200
    after = live.get("/api/stats/history?n=300").json["samples"]
    # No sample was added per poll: the history grows with time, not with viewers.
    elapsed = after[-1]["t"] - before[-1]["t"]
    assert len(after) - len(before) <= elapsed / 0.2 + 2
    for _ in range(40):
        assert live.post("/api/pages/hot/view").status == 200
    deadline = time.monotonic() + 30
    window = None
    while time.monotonic() < deadline:
        window = live.get("/api/stats").json["window"]
        if window["commits_per_s"] > 0:
            break
        time.sleep(0.1)
    assert window and window["commits_per_s"] > 0 and 0 < window["window_s"] <= 10.5
    assert live.get("/api/stats").json["window"]["window_s"] <= 10.5


# -- overload and stop ----------------------------------------------------------

def test_overload_answers_503_with_retry_after(tmp_path):
    with live_app(str(tmp_path / "app.db"), **{"engine.sqlite_gateway.queue_size": 2}) as live:
        assert live.post("/api/pages", {"name": "p", "cap": 10}).status == 201
        db = live.db
        blocker = WorkerBlocker(db)  # holds the worker; the queue can fill
        try:
            queued = [db.submit("UPDATE pages SET views = views WHERE name = ?", ("p",))
                      for _ in range(2)]
            for path, body in [("/api/pages/p/view", None),
                               ("/api/bets?async=1", {"account": 1, "match": 1, "pick": "a",
                                                      "stake": 1})]:
                r = live.post(path, body)
                assert r.status == 503, r.text
                assert r.headers["Retry-After"] == "1" and "full" in r.json["error"]
        finally:
            blocker.done()
        assert all(f.result(10).rowcount == 1 for f in queued)
        assert live.post("/api/pages/p/view").status == 200


def test_graceful_stop_drains_every_accepted_write(tmp_path):
    path = str(tmp_path / "app.db")
    with live_app(path) as live:
        account, match = _setup_betting(live, 10**9)
        blocker = WorkerBlocker(live.db)  # so the bets are still queued at the stop
        try:
            tickets = []
            for i in range(60):
                r = live.post("/api/bets?async=1", {"account": account, "match": match,
                                                    "pick": f"p{i}", "stake": 1})
                assert r.status == 202
                tickets.append(r.json["ticket"])
            assert live.db.stats()["queued"] == 60
        finally:
            threading.Timer(0.3, blocker.release.set).start()
            cherrypy.engine.stop()  # server, jobs, then the gateway drains
        blocker.done()
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        placed = {row[0] for row in conn.execute("SELECT ticket FROM bets")}
        balance = conn.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchall()
    finally:
        conn.close()
    assert placed == set(tickets)
    assert balance == [(10**9 - 60,)]


def test_helper_jobs_start_and_stop_with_the_engine(tmp_path):
    from webapp import app as webapp_app

    conf = {"helpers.maintenance.backup_dir": str(tmp_path / "backups")}
    with live_app(str(tmp_path / "app.db"), helpers=True, **conf) as live:
        jobs = webapp_app._installed["jobs"]
        assert {type(j).__name__ for j in jobs} == {"RollupJob", "SettlementJob",
                                                    "MaintenanceJob"}
        names = {t.name for t in threading.enumerate()}
        assert {f"periodic-job:{n}" for n in ("rollup", "settlement", "maintenance")} <= names
        assert live.get("/api/stats").status == 200
    assert not [t for t in threading.enumerate() if t.name.startswith("periodic-job:")]


def test_python_dash_m_webapp_serves_and_stops_on_sigterm(tmp_path):
    port = free_port()
    code = "import runpy; runpy.run_module('webapp', run_name='__main__', alter_sys=True)"
    args = ("--config", str(ROOT / "webapp" / "app.conf"), "--port", str(port),
            "--db", str(tmp_path / "main.db"))
    log = tmp_path / "server.log"
    with open(log, "w") as out, child_python(code, *args, cwd=str(tmp_path), stdout=out,
                                             stderr=subprocess.STDOUT) as child:
        deadline = time.monotonic() + 30
        answer = None
        while answer is None and time.monotonic() < deadline and child.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=5) as r:
                    answer = r.status
            except OSError:
                time.sleep(0.1)
        assert answer == 200, log.read_text()
        # A SIGTERM while the bus is still STARTING makes CherryPy os._exit(70).
        while "Bus STARTED" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0, log.read_text()
    assert "sqlite_gateway: closed" in log.read_text()
    assert (tmp_path / "main.db").exists()


# -- a factory: same app code, the old way underneath (what the load sweep runs) -----

def test_the_app_runs_unchanged_on_the_retry_baseline(tmp_path):
    """build_app(factory=RetryGateway) swaps in the baseline; results stay exact, its
    retries are counted."""
    from benchmarks.baselines import RetryGateway
    with live_app(str(tmp_path / "retry.db"), factory=RetryGateway) as live:
        stats = live.get("/api/stats").json
        # It is really the old way: only the baselines count retries and BusyErrors.
        assert "retries" in stats and "busy_errors" in stats
        _twenty_viewers_hit_a_cap_of_150_exactly(live)
        assert _count(live.db_path, "SELECT count(*) FROM page_views") == 150
