"""Priorities: interactive before background, FIFO within each, flush over both,
no starvation, background slices, and bulk()."""

from __future__ import annotations

import threading

import apsw
import pytest
from conftest import WorkerBlocker, scalar

from sqlite_gateway import Gateway
from sqlite_gateway.bulk import _SLICE_STEP
from sqlite_gateway.bulk import run_slice as _run_slice
from sqlite_gateway.request import Kind, Request
from sqlite_gateway.requestqueue import RequestQueue
from sqlite_gateway.stats import Stats
from sqlite_gateway.worker import Worker


def _log(conn, tag):
    conn.execute("INSERT INTO log(tag) VALUES (?)", (tag,))


def _order(db):
    return [row[0] for row in db.execute("SELECT tag FROM log ORDER BY id").rows]


@pytest.fixture
def db(gateway):
    gateway.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, tag TEXT)")
    return gateway


def test_interactive_requests_go_ahead_of_background_fifo_within_each(db):
    blocker = WorkerBlocker(db)
    futures = [db.submit_transaction(_log, "bg1", priority="background"),
               db.submit_transaction(_log, "web1"),
               db.submit_transaction(_log, "bg2", priority="background"),
               db.submit("INSERT INTO log(tag) VALUES ('web2')", priority="interactive")]
    blocker.done()
    for future in futures:
        future.result(10)
    assert _order(db) == ["web1", "web2", "bg1", "bg2"]


def test_flush_waits_for_older_background_work_but_not_newer(db):
    blocker = WorkerBlocker(db)
    older = [db.submit_transaction(_log, f"bg{i}", priority="background") for i in range(5)]
    flushed = threading.Event()
    flusher = threading.Thread(target=lambda: (db.flush(timeout=10), flushed.set()))
    flusher.start()
    # Wait (bounded) until the flush is queued, then add newer background work.
    for _ in range(1000):
        if db.stats()["queued"] >= 7:  # blocker excluded: 5 bg + flush
            break
        threading.Event().wait(0.005)
    newer = db.submit_transaction(_log, "late", priority="background")
    blocker.done()
    flusher.join(10)
    assert flushed.is_set()
    assert all(future.done() and future.exception() is None for future in older)
    newer.result(10)
    assert _order(db) == [f"bg{i}" for i in range(5)] + ["late"]


def test_a_barrier_at_the_head_serves_older_background_work_first():
    queue = RequestQueue(100)
    old = Request.submitted(Kind.EXECUTE, "SELECT 1", lane=1)
    queue.put(old)
    barrier = Request.submitted(Kind.FLUSH)
    queue.put(barrier)
    newer = Request.submitted(Kind.EXECUTE, "SELECT 2", lane=1)
    queue.put(newer)
    assert queue.get_batch(10, 0) == [old]  # only what is older than the barrier
    assert queue.get_batch(10, 0) == [barrier]
    assert queue.get_batch(10, 0) == [newer]


def test_a_barrier_inside_an_interactive_batch_stops_it_while_older_work_waits():
    queue = RequestQueue(100)
    web1 = Request.submitted(Kind.EXECUTE, "SELECT 1")
    queue.put(web1)
    bg = Request.submitted(Kind.EXECUTE, "SELECT 2", lane=1)
    queue.put(bg)
    barrier = Request.submitted(Kind.FLUSH)
    queue.put(barrier)
    assert queue.get_batch(10, 0) == [web1]
    assert queue.get_batch(10, 0) == [bg]
    assert queue.get_batch(10, 0) == [barrier]


def test_background_work_that_waited_too_long_is_served_next():
    patient = RequestQueue(100, starve_after=3600)
    starving = RequestQueue(100, starve_after=0)
    for queue in (patient, starving):
        queue.put(Request.submitted(Kind.EXECUTE, "SELECT 'bg'", lane=1))
        queue.put(Request.submitted(Kind.EXECUTE, "SELECT 'web'"))
    assert patient.get_batch(10, 0)[0].sql == "SELECT 'web'"
    assert starving.get_batch(10, 0)[0].sql == "SELECT 'bg'"


@pytest.mark.parametrize("slice_", [0.001, 60.0], ids=["slice-used-up", "interactive-arrived"])
def test_a_background_batch_yields_the_writer_after_its_slice_or_to_interactive_work(
        db_path, slice_):
    queue = RequestQueue(100)
    worker = Worker(db_path, queue, Stats(), batch_max=256, synchronous="FULL",
                    busy_timeout=5.0, background_slice=slice_)
    worker.open()
    try:
        queue.put(Request.submitted(Kind.EXECUTE,
                                    "CREATE TABLE log(id INTEGER PRIMARY KEY, tag TEXT)"))
        assert worker.run_once(timeout=0)
        web = Request.submitted(Kind.TRANSACTION, fn=_log, args=("web",))

        def slow(conn, tag):
            _log(conn, tag)
            threading.Event().wait(0.01)  # longer than the slice
            if tag == "bg0":
                queue.put(web)  # interactive work arrives while bg0 runs

        bgs = [Request.submitted(Kind.TRANSACTION, fn=slow, args=(f"bg{i}",), lane=1)
               for i in range(3)]
        for request in bgs:
            queue.put(request)
        assert worker.run_once(timeout=0)  # bg0 alone: slice used up or web arrived
        assert bgs[0].future.done() and not bgs[1].future.done()
        assert worker.run_once(timeout=0)  # the interactive request, ahead of bg1
        assert web.future.done() and not bgs[1].future.done()
        assert worker.run_once(timeout=0) and worker.run_once(timeout=0)
        assert all(request.future.result(0) is None for request in bgs)
        conn = apsw.Connection(db_path)
        assert [r[0] for r in conn.execute("SELECT tag FROM log ORDER BY id")] == [
            "bg0", "web", "bg1", "bg2"]
        conn.close()
    finally:
        worker.close()


def test_bulk_commits_every_row_in_slices_and_lets_interactive_work_in(db_path):
    with Gateway(db_path, background_slice=0.002) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
        rows = [(i,) for i in range(100_000)]
        before = db.stats()["commits"]
        result: list[int] = []
        job = threading.Thread(target=lambda: result.append(
            db.bulk("INSERT INTO t(v) VALUES (?)", rows)))
        job.start()
        # Interactive writes while the job runs get in between its slices.
        for _ in range(2000):
            if scalar(db_path, "SELECT count(*) FROM t") > 0:
                break
            threading.Event().wait(0.001)
        db.execute("INSERT INTO t(v) VALUES (-1)")
        job.join(60)
        assert result == [100_000]
        assert scalar(db.path, "SELECT count(*) FROM t WHERE v >= 0") == 100_000
        web_id = scalar(db.path, "SELECT id FROM t WHERE v = -1")
        assert web_id < scalar(db.path, "SELECT max(id) FROM t"), "the web write waited for the job"
        assert db.stats()["commits"] - before > 2, "the job was not cut into slices"


def test_a_bulk_slice_ends_early_once_interactive_work_waits():
    class Conn:
        calls = 0

        def executemany(self, sql, rows):
            Conn.calls += 1
            return type("R", (), {"rowcount": len(rows)})()

    rows = [(i,) for i in range(1000)]
    waiting = iter([False, False, True])
    ran, changed = _run_slice(Conn(), "INSERT", rows, 10, 60.0, lambda: next(waiting))
    assert Conn.calls == 3 and ran == changed == 3 * _SLICE_STEP
    ran, _ = _run_slice(Conn(), "INSERT", rows, 0, 60.0, None)  # nobody waits: all of it
    assert ran == 1000


def test_bulk_stops_at_the_first_failing_slice_and_says_how_far_it_got(gateway):
    gateway.execute("CREATE TABLE u(v INTEGER UNIQUE)")
    rows = [(i,) for i in range(50)] + [(3,)] + [(i,) for i in range(100, 150)]
    with pytest.raises(apsw.ConstraintError) as info:
        gateway.bulk("INSERT INTO u(v) VALUES (?)", rows)
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "parameter sets were committed before this error" in note
    done = int(note.split("bulk(): ")[1].split(" of ")[0])
    # Slices are atomic: exactly the slices before the failing one are kept.
    assert scalar(gateway.path, "SELECT count(*) FROM u") == done
    assert scalar(gateway.path, "SELECT count(*) FROM u WHERE v >= 100") == 0
    gateway.execute("INSERT INTO u(v) VALUES (999)")  # the gateway still serves


@pytest.mark.parametrize("bad", ["urgent", 0, None, "BACKGROUND"])
def test_an_unknown_priority_is_refused_before_anything_is_queued(db, bad):
    with pytest.raises(ValueError, match="priority must be one of"):
        db.execute("INSERT INTO log(tag) VALUES ('x')", priority=bad)
    with pytest.raises(ValueError, match="priority must be one of"):
        db.submit_transaction(_log, "x", priority=bad)
    assert _order(db) == []


def test_background_slice_must_be_positive(db_path):
    for bad in (0, -1, "fast", float("nan")):
        with pytest.raises(ValueError, match="background_slice"):
            Gateway(db_path, background_slice=bad)
