"""Faults injected into the worker itself: a failed ROLLBACK, and the worker dying.

A failed ROLLBACK is survived (the worker reopens its connection). A worker
that dies answers every waiting and later caller with GatewayClosed at once,
and the app restarts: a new Gateway on the same file, by hand or by the
CherryPy plugin, with every committed row there.
"""

from __future__ import annotations

import threading
import time

import apsw
import pytest
from cherrypy.process.wspbus import Bus
from conftest import WorkerBlocker, run_benchmark, scalar, wait_until
from webapp_fixtures import live_app

from sqlite_gateway import Gateway, GatewayClosed
from sqlite_gateway.integrations.cherrypy import CHANNEL, GatewayPlugin
from sqlite_gateway.gateway import State

ANSWER_S = 5  # a bound that detects a hang (1 s is the promise; 5x margin)


def break_rollback(db, error=apsw.IOError):
    """Make the worker's next ROLLBACK raise ``error``; return a list of the failures."""
    link = db._worker.link
    exec_, rollback, failures = link.exec, link.sql["rollback"], []

    def flaky(sql):
        if sql == rollback and not failures:
            failures.append(sql)
            raise error("injected ROLLBACK failure")
        return exec_(sql)

    link.exec = flaky
    return failures


@pytest.fixture
def fk_db(db_path):
    """A schema whose deferred foreign key makes COMMIT fail and leave the
    transaction open, so that the worker must ROLLBACK."""
    db = Gateway(db_path).start()
    db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY);"
               "CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER "
               "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    try:
        yield db
    finally:
        db.close(timeout=30)


def test_a_failed_rollback_reopens_the_connection_and_the_gateway_goes_on(fk_db, caplog):
    fk_db.execute("INSERT INTO parent VALUES (1)")
    failures = break_rollback(fk_db)
    blocker = WorkerBlocker(fk_db)
    orphan = fk_db.submit("INSERT INTO child VALUES (1, 99)")  # fails only at COMMIT
    good = fk_db.submit("INSERT INTO child VALUES (2, 1)")
    blocker.done()
    assert isinstance(orphan.exception(ANSWER_S), apsw.ConstraintError)
    assert isinstance(good.exception(ANSWER_S), apsw.ConstraintError)  # same batch, same COMMIT
    assert fk_db.execute("INSERT INTO child VALUES (3, 1)").rowcount == 1
    assert failures and "ROLLBACK failed" in caplog.text and "reopening" in caplog.text
    assert fk_db.state is State.RUNNING
    assert fk_db.execute("SELECT group_concat(id) FROM child").scalar() == "3"


def test_a_failed_rollback_that_cannot_reopen_breaks_the_gateway(fk_db, db_path):
    fk_db.execute("INSERT INTO parent VALUES (1)")
    break_rollback(fk_db)

    def cannot_open():
        raise apsw.CantOpenError("injected: the file cannot be opened")

    fk_db._worker.link.open = cannot_open
    with pytest.raises(apsw.ConstraintError):
        fk_db.execute("INSERT INTO child VALUES (1, 99)")
    # Three attempts to reopen take about 1.1 s.
    wait_until(lambda: fk_db.state is State.BROKEN, "the gateway to give up", ANSWER_S * 2)
    with pytest.raises(GatewayClosed, match="broken.*cannot be opened"):
        fk_db.execute("SELECT 1")
    fk_db.close()
    with Gateway(db_path) as again:
        assert again.execute("SELECT count(*) FROM parent").scalar() == 1


def _die_in_batch(worker):
    def boom(batch):
        raise RuntimeError("injected fault")
    worker.batches.run_batch = boom


def _die_at_commit(worker):
    exec_, commit = worker.link.exec, worker.link.sql["commit"]

    def boom(sql):
        if sql == commit:
            raise RuntimeError("injected fault")
        return exec_(sql)
    worker.link.exec = boom


def _die_after_commit(worker):
    answer = worker.batches.answer

    def boom(requests):
        if any(r.kind.value == "execute" for r in requests):
            raise RuntimeError("injected fault")
        return answer(requests)
    worker.batches.answer = boom


@pytest.mark.parametrize("inject, committed, note", [
    (_die_in_batch, False, "it was not committed"),
    (_die_at_commit, False, "may be committed"),
    (_die_after_commit, True, "may be committed")])
def test_a_dying_worker_answers_everyone_within_1s_and_a_new_gateway_has_every_commit(
        gateway, db_path, inject, committed, note):
    for i in range(10):
        gateway.execute("INSERT INTO items(name) VALUES (?)", (f"before{i}",))
    blocker = WorkerBlocker(gateway)
    inflight = [gateway.submit("INSERT INTO items(name) VALUES (?)", (f"batch{i}",))
                for i in range(5)]
    errors: list[BaseException] = []

    def call(fn):
        try:
            fn()
        except BaseException as exc:  # asserted below
            errors.append(exc)

    callers = [threading.Thread(target=call, args=(lambda: gateway.execute(
                   "INSERT INTO items(name) VALUES ('sync')", timeout=None),)),
               threading.Thread(target=call, args=(lambda: gateway.flush(timeout=None),))]
    for t in callers:
        t.start()
    wait_until(lambda: gateway.stats()["queued"] >= 7, "the callers to queue", ANSWER_S)
    inject(gateway._worker)
    blocker.done()
    for future in inflight:
        exc = future.exception(ANSWER_S)
        assert isinstance(exc, GatewayClosed) and "injected fault" in str(exc)
        assert note in str(exc)
    for t in callers:
        t.join(ANSWER_S)
    assert not any(t.is_alive() for t in callers), "a caller without a deadline hung"
    assert len(errors) == 2 and all(isinstance(e, GatewayClosed) for e in errors)
    start = time.monotonic()
    for later in (lambda: gateway.execute("SELECT 1"), lambda: gateway.submit("SELECT 1"),
                  lambda: gateway.transaction(lambda conn: None), gateway.flush):
        with pytest.raises(GatewayClosed, match="broken.*injected fault"):
            later()
    assert time.monotonic() - start < gateway.timeout / 3  # not waiting for the timeout
    assert gateway.state is State.BROKEN
    gateway.close()
    # The app restarts: a new Gateway on the same file.
    with Gateway(db_path) as again:
        names = {r[0] for r in again.execute("SELECT name FROM items")}
        assert {f"before{i}" for i in range(10)} <= names
        assert ({f"batch{i}" for i in range(5)} <= names) is committed
        assert again.execute("INSERT INTO items(name) VALUES ('after')").rowcount == 1
    assert scalar(db_path, "PRAGMA integrity_check") == "ok"


def test_the_plugin_replaces_a_broken_gateway_on_request_and_on_graceful(db_path):
    bus = Bus()
    plugin = GatewayPlugin(bus, db_path, setup=lambda db: db.execute(
        "CREATE TABLE IF NOT EXISTS t(x)"))
    plugin.subscribe()
    bus.start()
    try:
        first = bus.publish(CHANNEL)[0]
        first.execute("INSERT INTO t VALUES (1)")
        _die_in_batch(first._worker)
        with pytest.raises(GatewayClosed):
            first.execute("INSERT INTO t VALUES (2)")
        assert first.state is State.BROKEN
        second = bus.publish(CHANNEL + "-renew", first)[0]
        assert second is not first and second.state is State.RUNNING
        assert bus.publish(CHANNEL + "-renew", first) == [second]  # once only
        assert second.execute("SELECT count(*) FROM t").scalar() == 1
        _die_in_batch(second._worker)
        with pytest.raises(GatewayClosed):
            second.execute("INSERT INTO t VALUES (3)")
        start = time.monotonic()
        bus.graceful()  # a broken gateway is closed at once and replaced
        assert time.monotonic() - start < ANSWER_S
        third = bus.publish(CHANNEL)[0]
        assert third not in (first, second) and third.execute("SELECT 1").scalar() == 1
    finally:
        bus.exit()


def test_the_webapp_keeps_serving_after_its_worker_dies(tmp_path):
    with live_app(str(tmp_path / "app.db")) as live:
        assert live.post("/api/pages", {"name": "home", "cap": 100}).status == 201
        assert live.post("/api/pages/home/view").status == 200
        broken = live.db
        broken.flush()  # the view's posted log row is in: the next batch is the next request's
        _die_in_batch(broken._worker)
        reply = live.post("/api/pages/home/view")  # the request that meets the death
        assert reply.status == 503 and reply.headers["Retry-After"] == "1"
        assert broken.state is State.BROKEN
        reply = live.post("/api/pages/home/view")  # the next one: on a new gateway
        assert reply.status == 200, reply.text
        assert live.db is not broken
        assert live.get("/api/pages/home").json["views"] == 2


def test_the_fault_figures_script_runs_and_loses_nothing():
    proc = run_benchmark("faults", "--markdown", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 11, proc.stdout
    assert all(" | 0 of " in row and row.endswith("| ok |") for row in rows), proc.stdout
