"""Many threads, one writer: exact results, real batching, errors that stay alone."""

from __future__ import annotations

import threading

import apsw
from conftest import WorkerBlocker


def _run_threads(n, target):
    errors = []

    def guarded(k):
        try:
            target(k)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread never finished"
    return errors


def test_32_threads_x_200_increments_of_one_row_are_exact(gateway):
    gateway.execute("INSERT INTO counters(id, n) VALUES (1, 0)")

    def incr(_):
        for _ in range(200):
            gateway.execute("UPDATE counters SET n = n + 1 WHERE id = 1")

    assert _run_threads(32, incr) == []
    assert gateway.execute("SELECT n FROM counters WHERE id = 1").scalar() == 6400
    figures = gateway.stats()
    assert figures["errors"] == 0
    assert figures["batch_max"] > 1, "32 concurrent callers never shared a commit"
    assert figures["commits"] < figures["requests"]


def test_a_constraint_error_fails_one_caller_while_its_batch_commits(gateway):
    gateway.execute("INSERT INTO items(name) VALUES ('taken')")
    blocker = WorkerBlocker(gateway)
    outcomes = {}

    def call(k):
        name = "taken" if k == 3 else f"free{k}"
        try:
            outcomes[k] = gateway.execute("INSERT INTO items(name) VALUES (?)", (name,))
        except apsw.ConstraintError as exc:
            outcomes[k] = exc

    threads = [threading.Thread(target=call, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    # Wait until all eight are queued behind the blocker, so they share one batch.
    for _ in range(1000):
        if gateway.stats()["queued"] == 8:
            break
        threading.Event().wait(0.01)
    assert gateway.stats()["queued"] == 8
    blocker.done()
    for t in threads:
        t.join(30)
    assert isinstance(outcomes[3], apsw.ConstraintError)
    assert all(outcomes[k].rowcount == 1 for k in outcomes if k != 3)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 8
    assert gateway.stats()["batch_max"] == 8  # all eight shared one transaction


def test_many_threads_mixing_every_call_kind(gateway):
    gateway.execute("INSERT INTO counters(id, n) VALUES (1, 0), (2, 0)")

    def mixed(k):
        for i in range(50):
            gateway.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
            gateway.transaction(lambda conn: conn.execute(
                "UPDATE counters SET n = n + 1 WHERE id = 2"))
            gateway.submit("INSERT INTO items(name) VALUES (?)", (f"{k}:{i}",))
        gateway.flush(timeout=60)

    assert _run_threads(16, mixed) == []
    rows = dict(gateway.execute("SELECT id, n FROM counters").rows)
    assert rows == {1: 800, 2: 800}
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 800


def test_stats_report_the_documented_figures(gateway):
    for i in range(10):
        gateway.execute("INSERT INTO items(name) VALUES (?)", (str(i),))
    figures = gateway.stats()
    for key in ("queued", "requests", "errors", "batches", "batch_mean", "batch_max",
                "commits", "latency_p50_ms", "latency_p99_ms"):
        assert key in figures
    assert figures["requests"] >= 12  # two CREATE TABLEs + ten inserts
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
