"""Requests that run too long: interrupted SQL, and the watchdog for a hung fn.

A statement past its caller's deadline is interrupted and the gateway goes on.
A Python fn that never returns cannot be stopped: the watchdog breaks the
gateway so that every waiting and later caller is answered, and the app makes
a new Gateway once the stuck thread has let go of the file (in real life: a
process restart; here the test releases the fn).
"""

from __future__ import annotations

import threading
import time

import apsw
import pytest
from conftest import WorkerBlocker, scalar, wait_until

from sqlite_gateway import Gateway, GatewayClosed, RequestTimeout
from sqlite_gateway.gateway import State
from sqlite_gateway.request import Kind, Request
from sqlite_gateway.requestqueue import RequestQueue
from sqlite_gateway.stats import Stats
from sqlite_gateway.turn import GivenUp
from sqlite_gateway.watchdog import Watchdog
from sqlite_gateway.worker import Worker

ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c")  # never ends by itself
ENDLESS_WRITE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                 "INSERT INTO items(name) SELECT 'endless' || x FROM c")
ANSWER_S = 10  # a bound that detects a hang, not a timing goal


def test_a_statement_past_its_callers_deadline_is_interrupted_and_the_gateway_goes_on(gateway):
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match="interrupted") as info:
        gateway.execute(ENDLESS, timeout=0.3)
    assert time.monotonic() - start < ANSWER_S
    assert info.value.started and info.value.interrupted
    assert gateway.execute("SELECT 1").scalar() == 1
    assert gateway.state is State.RUNNING


def test_an_interrupted_write_commits_nothing_and_its_batch_neighbours_commit(gateway):
    blocker = WorkerBlocker(gateway)
    before = gateway.submit("INSERT INTO items(name) VALUES ('before')")
    outcome = []

    def endless_write():
        try:
            gateway.execute(ENDLESS_WRITE, timeout=0.5)
        except RequestTimeout as exc:
            outcome.append(exc)

    writer = threading.Thread(target=endless_write)
    writer.start()
    wait_until(lambda: gateway.stats()["queued"] >= 2, "the endless write to queue behind "
               "'before'", ANSWER_S)
    after = gateway.submit("INSERT INTO items(name) VALUES ('after')")
    blocker.done()
    writer.join(ANSWER_S)
    assert outcome and outcome[0].interrupted
    assert before.result(ANSWER_S).rowcount == 1
    assert after.result(ANSWER_S).rowcount == 1
    gateway.flush(timeout=ANSWER_S)
    names = gateway.execute("SELECT name FROM items ORDER BY id").rows
    assert names == (("before",), ("after",))


def test_a_fn_past_its_callers_deadline_is_not_interrupted_and_may_still_commit(gateway):
    release = threading.Event()

    def slow(conn):
        assert release.wait(30)
        conn.execute("INSERT INTO items(name) VALUES ('slow')")

    with pytest.raises(RequestTimeout, match="may still commit") as info:
        gateway.transaction(slow, timeout=0.2)
    assert not info.value.interrupted
    release.set()
    gateway.flush(timeout=ANSWER_S)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1


def test_the_watchdog_interrupts_a_statement_that_runs_past_hang_timeout(db_path):
    with Gateway(db_path, busy_timeout=0.1, hang_timeout=0.5, timeout=None) as db:
        with pytest.raises(apsw.InterruptError):
            db.execute(ENDLESS)  # no deadline of its own: the watchdog stops it
        assert db.execute("SELECT 2").scalar() == 2
        assert db.state is State.RUNNING


def test_a_hung_fn_breaks_the_gateway_and_every_caller_is_answered(db_path, caplog):
    db = Gateway(db_path, busy_timeout=0.1, hang_timeout=1.0).start()
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO items(name) VALUES ('committed before')")
    entered, release = threading.Event(), threading.Event()

    def hang(conn):
        conn.execute("INSERT INTO items(name) VALUES ('hung')")
        entered.set()
        release.wait(60)  # a fn that never returns (released at the end of the test)

    timeouts: list[BaseException] = []

    def call_hang():
        try:
            db.transaction(hang, timeout=0.3)
        except RequestTimeout as exc:
            timeouts.append(exc)

    try:
        blocker = WorkerBlocker(db)  # so that a neighbour shares the hung fn's batch
        caller = threading.Thread(target=call_hang)
        caller.start()
        wait_until(lambda: db.stats()["queued"] >= 1, "the hanging call to queue", ANSWER_S)
        neighbour = db.submit("INSERT INTO items(name) VALUES ('neighbour')")
        blocker.done()
        assert entered.wait(ANSWER_S)
        caller.join(ANSWER_S)  # the fn's own caller stops waiting at its deadline
        assert timeouts and timeouts[0].started
        queued = [db.submit("INSERT INTO items(name) VALUES (?)", (str(i),)) for i in range(5)]
        waiters: list[BaseException] = []

        def wait_without_deadline():
            try:
                db.flush(timeout=None)  # would wait forever without the watchdog
            except BaseException as exc:  # asserted below
                waiters.append(exc)

        waiter = threading.Thread(target=wait_without_deadline)
        waiter.start()
        waiter.join(ANSWER_S)
        assert not waiter.is_alive(), "a caller without a deadline was never answered"
        assert isinstance(waiters[0], GatewayClosed)
        assert "stuck" in str(waiters[0]) and "restart the process" in str(waiters[0])
        # Everyone else was answered by the same act (within 1 s; 5x margin here).
        for future in queued:
            assert isinstance(future.exception(5.0), GatewayClosed)
        assert "not committed" in str(neighbour.exception(5.0))
        start = time.monotonic()
        with pytest.raises(GatewayClosed, match="broken"):
            db.execute("SELECT 1")
        assert time.monotonic() - start < db.timeout / 3  # not waiting for the timeout
        assert db.state is State.BROKEN
        assert "watchdog" in caplog.text
        start = time.monotonic()
        db.close()  # returns at once: a stuck worker is not waited for
        assert time.monotonic() - start < ANSWER_S  # close() has no timeout: a hang detector
    finally:
        release.set()
    thread = db._life.thread
    thread.join(ANSWER_S)  # released, the worker finds it was given up and stops
    assert not thread.is_alive()
    # It committed nothing after it was given up; the earlier commit is intact.
    assert scalar(db_path, "SELECT group_concat(name) FROM items") == "committed before"
    with Gateway(db_path) as again:
        assert again.execute("INSERT INTO items(name) VALUES ('again')").rowcount == 1
        assert again.execute("SELECT count(*) FROM items").scalar() == 2


def test_hang_timeout_and_vfs_are_checked(db_path):
    with pytest.raises(ValueError, match="must exceed busy_timeout"):
        Gateway(db_path, hang_timeout=5.0, busy_timeout=5.0)
    with pytest.raises(ValueError, match="hang_timeout"):
        Gateway(db_path, hang_timeout=-1)
    with pytest.raises(ValueError, match="registered SQLite VFS"):
        Gateway(db_path, vfs="no-such-vfs")
    with Gateway(db_path, hang_timeout=None, vfs=apsw.vfs_names()[0]) as db:
        assert db._life.watchdog is None and db.execute("SELECT 1").scalar() == 1


def test_the_watchdog_gives_up_only_a_step_that_stays_stuck_past_the_grace(db_path):
    """Driven by hand, no threads: check(now) with made-up times."""
    queue = RequestQueue(10)
    worker = Worker(db_path, queue, Stats(), batch_max=10, synchronous="FULL", busy_timeout=0.1)
    dog = Watchdog(worker, hang_timeout=2.0, name="test")
    fn = Request.submitted(Kind.TRANSACTION, fn=lambda conn: None)
    queue.put(fn)
    worker._inflight = queue.get_batch(10)
    assert fn.claim()
    worker.turn.begin(fn)
    since, _ = worker.turn.current()
    assert not dog.check(since + 1.9)  # not yet hung
    assert not dog.check(since + 2.0)  # hung: interrupted first (no SQL runs here)
    worker.turn.end_request()
    worker.turn.begin(None, committing=True)  # ...and it moved on: a new step
    # Past the grace of the first step, but this one is new: interrupted, not given up.
    assert not dog.check(since + 3.5) and worker.death is None
    assert dog.check(since + 3.5 + dog.grace)  # still the same step: given up
    assert "stuck in BEGIN/COMMIT" in worker.death
    assert "may be committed" in str(fn.future.exception(0))
    with pytest.raises(GatewayClosed, match="broken"):
        queue.put(Request.submitted(Kind.FLUSH))
    with pytest.raises(GivenUp):  # the worker, if it ever returns, stops here
        worker.turn.begin(None)
