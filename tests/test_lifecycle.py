"""Start, close, worker death: nobody is ever left waiting."""

from __future__ import annotations

import gc
import threading
import time

import apsw
import pytest
from conftest import HANG_S, WorkerBlocker, run_python, scalar, wait_until

from sqlite_gateway import Gateway, GatewayClosed, GatewayError
from sqlite_gateway.gateway import State


def test_no_thread_starts_before_start(db_path):
    before = threading.active_count()
    db = Gateway(db_path)
    assert threading.active_count() == before
    assert db.state is State.NEW
    with pytest.raises(GatewayError, match="not started"):
        db.execute("SELECT 1")
    db.close()
    assert db.state is State.CLOSED


def test_context_manager_starts_and_closes(db_path):
    with Gateway(db_path) as db:
        assert db.state is State.RUNNING
        db.execute("CREATE TABLE t(x)")
    assert db.state is State.CLOSED


def test_close_drains_everything_queued_before_it(gateway, db_path):
    blocker = WorkerBlocker(gateway)
    futs = [gateway.submit("INSERT INTO items(name) VALUES (?)", (str(i),)) for i in range(500)]
    closer = threading.Thread(target=gateway.close)
    closer.start()
    # close() has begun (it refuses new work) while all 500 still wait behind the blocker:
    # what follows is the drain, not a close that started after the queue emptied.
    wait_until(lambda: gateway.state is State.CLOSING, "close() to begin")
    with pytest.raises(GatewayClosed):
        gateway.submit("INSERT INTO items(name) VALUES ('after close')")
    assert gateway.stats()["queued"] == 500 and not any(f.done() for f in futs)
    assert closer.is_alive()  # close() waits for the drain
    blocker.done()
    closer.join(HANG_S)
    assert not closer.is_alive() and gateway.state is State.CLOSED
    assert all(f.result(0).rowcount == 1 for f in futs)
    assert scalar(db_path, "SELECT count(*) FROM items") == 500


def test_calls_after_close_fail_fast_and_close_is_idempotent(gateway):
    gateway.close()
    gateway.close()
    for call in (lambda: gateway.execute("SELECT 1"),
                 lambda: gateway.submit("SELECT 1"),
                 lambda: gateway.transaction(lambda c: None),
                 lambda: gateway.flush()):
        start = time.monotonic()
        with pytest.raises(GatewayClosed, match="closed"):
            call()
        assert time.monotonic() - start < gateway.timeout / 3  # not waiting for the timeout
    assert gateway.state is State.CLOSED


def test_a_closed_gateway_cannot_be_restarted_but_a_new_one_can(db_path):
    db = Gateway(db_path).start()
    db.execute("CREATE TABLE t(x)")
    db.close()
    with pytest.raises(GatewayError, match="new Gateway"):
        db.start()
    with Gateway(db_path) as again:
        assert again.execute("SELECT count(*) FROM t").scalar() == 0


def test_start_reports_a_file_that_cannot_be_opened(tmp_path):
    db = Gateway(str(tmp_path / "missing-dir" / "x.db"))
    with pytest.raises(apsw.CantOpenError):
        db.start()
    assert db.state is State.CLOSED


def test_close_from_inside_a_transaction_fn_is_refused(gateway):
    with pytest.raises(GatewayError, match="worker thread"):
        gateway.transaction(lambda conn: gateway.close())


def test_worker_death_fails_waiting_and_later_callers_at_once(gateway, caplog):
    blocker = WorkerBlocker(gateway)
    queued = [gateway.submit("INSERT INTO items(name) VALUES (?)", (str(i),)) for i in range(20)]

    def boom(batch):
        raise RuntimeError("injected fault")

    gateway._worker.batches.run_batch = boom  # the next batch kills the worker
    blocker.done()
    for fut in queued:
        exc = fut.exception(5)
        assert isinstance(exc, GatewayClosed) and "injected fault" in str(exc)
    start = time.monotonic()
    with pytest.raises(GatewayClosed, match="broken.*injected fault"):
        gateway.execute("SELECT 1")
    assert time.monotonic() - start < gateway.timeout / 3  # not waiting for the timeout
    assert gateway.state is State.BROKEN
    assert "worker died" in caplog.text
    gateway.close()  # still fine
    assert gateway.state is State.BROKEN


def test_close_with_a_timeout_answers_the_queue_when_the_worker_hangs(gateway):
    blocker = WorkerBlocker(gateway)
    futs = [gateway.submit("SELECT 1") for _ in range(3)]
    gateway.close(timeout=0.2)
    for fut in futs:
        assert isinstance(fut.exception(5), GatewayClosed)
    blocker.done()


def test_an_abandoned_gateway_stops_its_worker(db_path):
    db = Gateway(db_path).start()
    thread = db._life.thread
    del db
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_interpreter_exit_drains_an_unclosed_gateway(db_path):
    code = """
import sys
from sqlite_gateway import Gateway
db = Gateway(sys.argv[1]).start()
db.execute("CREATE TABLE t(x)")
for i in range(200):
    db.submit("INSERT INTO t VALUES (?)", (i,))
# no close(): the exit hook must commit what was accepted
"""
    proc = run_python(code, db_path)
    assert proc.returncode == 0, proc.stderr
    assert scalar(db_path, "SELECT count(*) FROM t") == 200
