"""A bounded queue, and callers who stop waiting."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import WorkerBlocker

from sqlite_gateway import Gateway, Overloaded, RequestTimeout


@pytest.fixture
def small(db_path):
    db = Gateway(db_path, queue_size=5).start()
    db.execute("CREATE TABLE t(x)")
    try:
        yield db
    finally:
        db.close(timeout=30)


def test_a_full_queue_raises_overloaded_at_once_and_keeps_what_it_accepted(small):
    blocker = WorkerBlocker(small)
    accepted = [small.submit("INSERT INTO t VALUES (?)", (i,)) for i in range(5)]
    start = time.monotonic()
    with pytest.raises(Overloaded, match="5 requests waiting") as info:
        small.submit("INSERT INTO t VALUES (99)")
    assert time.monotonic() - start < small.timeout / 3  # not waiting for room
    assert info.value.queue_size == 5
    with pytest.raises(Overloaded):
        small.execute("INSERT INTO t VALUES (100)")
    blocker.done()
    assert [f.result(10).rowcount for f in accepted] == [1] * 5
    assert small.execute("SELECT group_concat(x) FROM t").scalar() == "0,1,2,3,4"


def test_a_request_whose_caller_gave_up_before_it_started_never_runs(gateway):
    blocker = WorkerBlocker(gateway)
    with pytest.raises(RequestTimeout, match="had not started") as info:
        gateway.execute("INSERT INTO items(name) VALUES ('too late')", timeout=0.2)
    assert info.value.started is False
    blocker.done()
    gateway.flush(timeout=10)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_a_request_that_had_started_may_still_commit(gateway):
    release = threading.Event()

    def slow(conn):
        conn.execute("INSERT INTO items(name) VALUES ('slow')")
        assert release.wait(30)

    with pytest.raises(RequestTimeout, match="may still commit") as info:
        gateway.transaction(slow, timeout=0.2)
    assert info.value.started is True
    release.set()
    gateway.flush(timeout=10)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1


def test_the_gateway_default_timeout_applies(db_path):
    with Gateway(db_path, timeout=0.2) as db:
        blocker = WorkerBlocker(db)
        with pytest.raises(RequestTimeout):
            db.execute("CREATE TABLE t(x)")
        with pytest.raises(RequestTimeout):
            db.flush()
        blocker.done()


def test_memory_stays_bounded_under_a_flood(small):
    """Offered far more than the queue holds: refused, not buffered."""
    blocker = WorkerBlocker(small)
    refused = 0
    for i in range(1000):
        try:
            small.submit("INSERT INTO t VALUES (?)", (i,))
        except Overloaded:
            refused += 1
    assert refused == 995
    assert small.stats()["queued"] == 5
    blocker.done()
    # Once the load drops, the queue drains and full loads are taken again.
    for _ in range(1000):  # bounded: 10 s
        if small.stats()["queued"] == 0:
            break
        time.sleep(0.01)
    assert small.stats()["queued"] == 0
    again = [small.submit("INSERT INTO t VALUES (?)", (i,)) for i in range(1000, 1005)]
    assert [f.result(10).rowcount for f in again] == [1] * 5
    assert small.execute("SELECT count(*) FROM t").scalar() == 10
