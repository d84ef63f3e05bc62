"""submit() and flush(): write-behind, in order, with a barrier."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import apsw
import pytest
from conftest import WorkerBlocker, scalar

from sqlite_gateway import Result


def test_submit_returns_a_future_at_once_and_its_result_after_commit(gateway, db_path):
    blocker = WorkerBlocker(gateway)
    fut = gateway.submit("INSERT INTO items(name) VALUES (?)", ("later",))
    assert isinstance(fut, Future) and not fut.done()
    blocker.done()
    assert isinstance(fut.result(10), Result)
    assert scalar(db_path, "SELECT count(*) FROM items") == 1


def test_submissions_run_in_the_order_they_were_accepted(gateway):
    futs = [gateway.submit("INSERT INTO items(name) VALUES (?)", (f"{i:05d}",))
            for i in range(2000)]
    gateway.flush(timeout=30)
    assert all(f.done() for f in futs)
    names = [r[0] for r in gateway.execute("SELECT name FROM items ORDER BY id")]
    assert names == [f"{i:05d}" for i in range(2000)]


def test_flush_returns_only_when_everything_before_it_is_committed(gateway, db_path):
    blocker = WorkerBlocker(gateway)
    futs = [gateway.submit("INSERT INTO items(name) VALUES (?)", (str(i),)) for i in range(100)]
    flushed = threading.Event()
    t = threading.Thread(target=lambda: (gateway.flush(timeout=30), flushed.set()))
    t.start()
    assert not flushed.wait(0.2)  # the worker is held: the barrier cannot be reached
    blocker.done()
    t.join(30)
    assert flushed.is_set()
    assert all(f.done() for f in futs)
    assert scalar(db_path, "SELECT count(*) FROM items") == 100


def test_flush_after_failed_submissions_still_returns(gateway):
    futs = [gateway.submit("INSERT INTO items(name) VALUES ('same')") for _ in range(5)]
    gateway.flush(timeout=30)
    errors = [f.exception(0) for f in futs]
    assert errors[0] is None
    assert all(isinstance(e, apsw.ConstraintError) for e in errors[1:])


def test_flush_is_per_caller_ordered_across_threads(gateway):
    """Each thread's flush covers that thread's own earlier submits."""
    failures = []

    def writer(k):
        futs = [gateway.submit("INSERT INTO items(name) VALUES (?)", (f"{k}-{i}",))
                for i in range(100)]
        gateway.flush(timeout=30)
        if not all(f.done() for f in futs):
            failures.append(k)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 800


def test_cancelling_a_submitted_future_before_it_starts_skips_it(gateway):
    blocker = WorkerBlocker(gateway)
    fut = gateway.submit("INSERT INTO items(name) VALUES ('cancelled')")
    assert fut.cancel()
    blocker.done()
    gateway.flush(timeout=10)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


@pytest.mark.parametrize("n", [1, 300])
def test_submit_transaction_returns_the_fn_value(gateway, n):
    futs = [gateway.submit_transaction(lambda conn, i: conn.execute(
        "INSERT INTO counters(id, n) VALUES (?, ?)", (i, i)).lastrowid, i) for i in range(n)]
    assert [f.result(30) for f in futs] == list(range(n))
