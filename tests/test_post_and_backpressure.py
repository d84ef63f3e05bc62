"""Fire-and-forget writes (post), back-pressure for producers, and write-behind order."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

import apsw
import pytest
from conftest import WorkerBlocker, child_python, read_only, wait_until


from sqlite_gateway import Gateway, GatewayClosed, Overloaded, PostFailure

BOUND_S = 10  # a bound that detects a hang, not a timing goal


@pytest.fixture
def log_db(db_path):
    db = Gateway(db_path).start()
    db.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, tag TEXT UNIQUE, n INTEGER)")
    try:
        yield db
    finally:
        db.close(timeout=30)


def test_order_is_kept_across_post_submit_and_execute_in_both_priorities(log_db):
    calls = []
    for i in range(300):
        kind = i % 4
        priority = "background" if i % 3 == 0 else "interactive"
        if kind == 0:
            log_db.post("INSERT INTO log(tag, n) VALUES (?, ?)", (f"p{i}", i), priority=priority)
        elif kind == 1:
            calls.append(log_db.submit("INSERT INTO log(tag, n) VALUES (?, ?)", (f"s{i}", i),
                                       priority=priority))
        elif kind == 2:
            log_db.post("INSERT INTO log(tag, n) VALUES (?, ?)", (f"q{i}", i), priority=priority)
        else:
            log_db.execute("INSERT INTO log(tag, n) VALUES (?, ?)", (f"e{i}", i),
                           priority=priority)
    log_db.flush()
    assert all(f.done() for f in calls)  # flush covers everything accepted before it
    rows = log_db.execute("SELECT n, tag FROM log ORDER BY id").rows
    assert len(rows) == 300
    for lane in (0, 1):  # within one priority, commit order is call order
        ns = [n for n, _ in rows if (n % 3 == 0) == bool(lane)]
        assert ns == sorted(ns)


def test_a_failed_post_keeps_nothing_and_is_reported_once_at_the_next_check(log_db, caplog):
    log_db.post("INSERT INTO log(tag, n) VALUES ('dup', 1)")
    log_db.flush()
    with caplog.at_level(logging.ERROR, logger="sqlite_gateway"):
        log_db.post("INSERT INTO log(tag, n) VALUES ('dup', 2)")  # UNIQUE: fails
        log_db.post("INSERT INTO log(tag, n) VALUES ('ok', 3)")
        log_db.post("INSERT INTO log(tag, n) VALUES ('dup', 4)")  # fails too
        log_db.flush()  # the barrier does not raise for posts
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "posted write failed" in errors[0].getMessage()
    assert log_db.stats()["post_failures"] == 2
    failures = log_db.failures()
    assert [type(f) for f in failures] == [PostFailure, PostFailure]
    assert [f.params for f in failures] == [(), ()]
    assert all(isinstance(f.error, apsw.ConstraintError) for f in failures)
    assert failures[0].seq < failures[1].seq
    assert log_db.failures() == []  # each failure goes to exactly one caller
    assert log_db.execute("SELECT group_concat(n) FROM (SELECT n FROM log ORDER BY id)"
                          ).scalar() == "1,3"


def test_the_params_of_a_write_behind_call_are_taken_at_the_call(log_db):
    blocker = WorkerBlocker(log_db)  # every call below waits in the queue
    row = [None, 0]
    named = {"tag": None, "n": 0}
    blob = bytearray(b"a")
    futures = []
    try:
        for i in range(5):
            row[0], row[1] = f"list{i}", i
            futures.append(log_db.submit("INSERT INTO log(tag, n) VALUES (?, ?)", row))
            named["tag"], named["n"] = f"dict{i}", i
            log_db.post("INSERT INTO log(tag, n) VALUES (:tag, :n)", named)
            blob[0] = ord("a") + i
            log_db.post("INSERT INTO log(tag, n) VALUES (CAST(? AS TEXT), ?)", (blob, 100 + i))
    finally:
        blocker.done()
    log_db.flush()
    tags = [r[0] for r in log_db.execute("SELECT tag FROM log ORDER BY id").rows]
    assert tags == [t for i in range(5) for t in (f"list{i}", f"dict{i}", chr(ord("a") + i))]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True])
def test_a_bad_timeout_is_refused_before_anything_is_queued(log_db, bad):
    calls = [
        lambda: log_db.execute("INSERT INTO log(tag) VALUES ('x')", timeout=bad),
        lambda: log_db.executemany("INSERT INTO log(tag) VALUES (?)", [("y",)], timeout=bad),
        lambda: log_db.transaction(lambda c: c.execute("INSERT INTO log(tag) VALUES ('z')"),
                                   timeout=bad),
        lambda: log_db.bulk("INSERT INTO log(tag) VALUES (?)", [("w",)], timeout=bad),
        lambda: log_db.flush(timeout=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="timeout"):
            call()
    log_db.flush()
    assert log_db.execute("SELECT count(*) FROM log").scalar() == 0
    with pytest.raises(ValueError, match="timeout"):
        Gateway(log_db.path, timeout=bad)


def test_blocking_producers_never_get_overloaded_and_lose_nothing(db_path):
    with Gateway(db_path, queue_size=50) as db:
        db.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, producer INTEGER, n INTEGER)")
        errors = []

        def produce(k):
            try:
                for n in range(2000):
                    db.post("INSERT INTO log(producer, n) VALUES (?, ?)", (k, n),
                            priority="background", block=True, timeout=BOUND_S)
            except BaseException as exc:  # reported below
                errors.append(exc)

        producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for t in producers:
            t.start()
        # Meanwhile a web request still finds room (above the producers' high-water mark).
        web = 0
        for _ in range(20):
            db.execute("INSERT INTO log(producer, n) VALUES (-1, 0)")
            web += 1
        for t in producers:
            t.join(60)
        assert errors == []
        db.flush()
        assert db.execute("SELECT count(*) FROM log").scalar() == 4 * 2000 + web
        for k in range(4):  # each producer's rows in its own order
            ns = [r[0] for r in db.execute(
                "SELECT n FROM log WHERE producer = ? ORDER BY id", (k,)).rows]
            assert ns == list(range(2000))
        assert db.stats()["post_failures"] == 0


def test_a_blocked_producer_is_answered_when_the_gateway_closes_and_times_out_otherwise(
        db_path):
    db = Gateway(db_path, queue_size=10).start()
    db.execute("CREATE TABLE log(n INTEGER)")
    blocker = WorkerBlocker(db)
    for i in range(9):  # the high-water mark: 90 % of 10
        db.post("INSERT INTO log VALUES (?)", (i,), priority="background", block=True)
    start = time.monotonic()
    with pytest.raises(Overloaded):
        db.post("INSERT INTO log VALUES (99)", priority="background", block=True, timeout=0.2)
    assert time.monotonic() - start < BOUND_S
    db.post("INSERT INTO log VALUES (9)")  # fail-fast callers still have the last place
    outcome = []

    def blocked():
        try:
            db.submit("INSERT INTO log VALUES (100)", priority="background", block=True)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    # The producer waits for room (no public figure counts blocked producers).
    wait_until(lambda: db.core.queue._blocked == 1, "the producer to block on the full queue")
    assert not outcome
    closer = threading.Thread(target=db.close, kwargs={"timeout": 30})
    closer.start()
    t.join(BOUND_S)
    assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], GatewayClosed)
    blocker.done()
    closer.join(BOUND_S)
    assert not closer.is_alive()
    conn = read_only(db_path)
    assert conn.execute("SELECT count(*) FROM log").fetchall()[0][0] == 10  # nothing lost
    conn.close()


def test_block_is_only_for_background_producers(log_db):
    with pytest.raises(ValueError, match="background"):
        log_db.post("INSERT INTO log(tag) VALUES ('x')", block=True)
    with pytest.raises(ValueError, match="block"):
        log_db.submit("INSERT INTO log(tag) VALUES ('x')", block="yes")  # type: ignore[arg-type]


CHILD = r"""
import os, sys
from sqlite_gateway import Gateway

path, log_path = sys.argv[1], sys.argv[2]
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
db = Gateway(path).start()
db.execute("CREATE TABLE IF NOT EXISTS views(id INTEGER PRIMARY KEY, burst INTEGER, n INTEGER)")
print("running", flush=True)
for burst in range(1_000_000):  # bounded; the parent kills us long before
    for n in range(500):
        db.post("INSERT INTO views(burst, n) VALUES (?, ?)", (burst, n),
                priority="background", block=True)
    db.flush()
    os.write(log, b"%d\n" % burst)  # this burst is covered by a completed flush
"""


def test_kill_9_during_a_post_burst_loses_nothing_a_completed_flush_covered(tmp_path):
    db_path, log_path = str(tmp_path / "app.db"), str(tmp_path / "flushed.log")
    with child_python(CHILD, db_path, log_path, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "running"
        wait_until(lambda: os.path.exists(log_path) and os.path.getsize(log_path) > 20,
                   "the child to complete a few flushes", timeout=60)
        # Not a synchronisation: the kill lands anywhere in the next burst, and the
        # assertion holds wherever it lands.
        time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    with open(log_path) as f:
        flushed = [int(line) for line in f.read().split()]
    assert flushed, "the child never completed a flush"
    conn = read_only(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for burst in flushed:
            assert conn.execute("SELECT count(*) FROM views WHERE burst = ?",
                                (burst,)).fetchall()[0][0] == 500
    finally:
        conn.close()
