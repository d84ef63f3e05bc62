"""The worker's turn, driven by hand in one thread: deterministic group commit."""

from __future__ import annotations

import apsw
import pytest
from conftest import scalar

from sqlite_gateway.request import Kind, Request
from sqlite_gateway.requestqueue import RequestQueue
from sqlite_gateway.stats import Stats
from sqlite_gateway.worker import Worker


@pytest.fixture
def worker(db_path):
    queue = RequestQueue(100)
    w = Worker(db_path, queue, Stats(), batch_max=256, synchronous="FULL", busy_timeout=5.0)
    w.open()
    put = lambda sql, params=(): _put(queue, Request.submitted(Kind.EXECUTE, sql, params))  # noqa: E731
    put("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    assert w.run_once(timeout=0)
    try:
        yield w
    finally:
        w.close()


def _put(queue, request):
    queue.put(request)
    return request


def put(worker, sql, params=()):
    return _put(worker.queue, Request.submitted(Kind.EXECUTE, sql, params))


def test_everything_queued_goes_into_one_transaction(worker, db_path):
    reqs = [put(worker, "INSERT INTO t(v) VALUES (?)", (str(i),)) for i in range(10)]
    assert worker.run_once(timeout=0)
    assert all(r.future.result(0).rowcount == 1 for r in reqs)
    figures = worker.stats.snapshot(0)
    assert figures["batch_max"] == 10
    assert figures["commits"] == 2  # the CREATE TABLE, then the ten inserts together
    assert scalar(db_path, "SELECT count(*) FROM t") == 10


def test_one_failing_request_fails_alone_and_the_batch_commits(worker, db_path):
    a = put(worker, "INSERT INTO t(v) VALUES ('a')")
    bad = put(worker, "INSERT INTO t(v) VALUES ('a')")  # duplicate: UNIQUE
    c = put(worker, "INSERT INTO t(v) VALUES ('c')")
    assert worker.run_once(timeout=0)
    assert a.future.result(0).rowcount == 1
    assert isinstance(bad.future.exception(0), apsw.ConstraintError)
    assert c.future.result(0).rowcount == 1
    assert scalar(db_path, "SELECT group_concat(v, '') FROM (SELECT v FROM t ORDER BY v)") == "ac"
    assert worker.stats.snapshot(0)["batches"] == 2


def test_nothing_is_answered_before_commit(worker, db_path):
    seen = []
    a = put(worker, "INSERT INTO t(v) VALUES ('x')")

    def fn(conn):
        seen.append(a.future.done())  # a ran earlier in this batch, but is not answered yet
        return conn.execute("SELECT count(*) FROM t").scalar()

    b = _put(worker.queue, Request.submitted(Kind.TRANSACTION, fn=fn))
    assert worker.run_once(timeout=0)
    assert seen == [False]
    assert b.future.result(0) == 1


def test_a_failing_commit_fails_every_request_of_the_batch(worker, db_path):
    put(worker, "CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    put(worker, "CREATE TABLE kid(p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    assert worker.run_once(timeout=0)
    ok = put(worker, "INSERT INTO t(v) VALUES ('kept?')")
    orphan = put(worker, "INSERT INTO kid(p) VALUES (42)")  # checked only at COMMIT
    assert worker.run_once(timeout=0)
    for r in (ok, orphan):
        assert isinstance(r.future.exception(0), apsw.ConstraintError)
    assert scalar(db_path, "SELECT count(*) FROM t") == 0
    # The worker goes on afterwards.
    again = put(worker, "INSERT INTO t(v) VALUES ('after')")
    assert worker.run_once(timeout=0)
    assert again.future.result(0).rowcount == 1


def test_a_cancelled_request_is_not_run(worker, db_path):
    r = put(worker, "INSERT INTO t(v) VALUES ('never')")
    assert r.future.cancel()
    assert worker.run_once(timeout=0)
    assert scalar(db_path, "SELECT count(*) FROM t") == 0


def test_an_exclusive_request_runs_alone_outside_a_transaction(worker):
    a = put(worker, "INSERT INTO t(v) VALUES ('1')")
    ex = _put(worker.queue, Request.submitted(Kind.EXCLUSIVE, fn=lambda conn: conn.in_transaction))
    b = put(worker, "INSERT INTO t(v) VALUES ('2')")
    assert worker.run_once(timeout=0)
    assert a.future.done() and not ex.future.done() and not b.future.done()
    assert worker.run_once(timeout=0)
    assert ex.future.result(0) is False and not b.future.done()
    assert worker.run_once(timeout=0)
    assert b.future.result(0).rowcount == 1


def test_run_once_returns_false_after_close_once_drained(worker):
    r = put(worker, "INSERT INTO t(v) VALUES ('last')")
    worker.queue.close("closing")
    assert worker.run_once(timeout=0) is True
    assert r.future.result(0).rowcount == 1
    assert worker.run_once(timeout=0) is False


def test_batch_max_bounds_a_batch(db_path):
    queue = RequestQueue(100)
    w = Worker(db_path, queue, Stats(), batch_max=3, synchronous="FULL", busy_timeout=1.0)
    w.open()
    try:
        reqs = [put(w, "SELECT ?", (i,)) for i in range(7)]
        assert w.run_once(timeout=0)
        assert [r.future.done() for r in reqs] == [True] * 3 + [False] * 4
    finally:
        w.close()


def test_single_statements_skip_the_savepoint_with_autocommit_semantics(worker, db_path):
    sql = "INSERT INTO t(v) VALUES (?), (?)"
    first = put(worker, sql, ("a", "b"))
    assert worker.run_once(timeout=0)
    assert first.future.result(0).rowcount == 2
    assert worker.link.single[sql] is True  # learned: one statement
    ok = put(worker, "INSERT INTO t(v) VALUES ('c')")
    bad = put(worker, sql, ("x", "x"))  # the second row fails: the statement is undone whole
    ok2 = put(worker, "INSERT INTO t(v) VALUES ('d')")
    assert worker.run_once(timeout=0)
    assert isinstance(bad.future.exception(0), apsw.ConstraintError)
    assert ok.future.result(0).rowcount == 1 and ok2.future.result(0).rowcount == 1
    assert scalar(db_path, "SELECT group_concat(v, '') FROM (SELECT v FROM t ORDER BY v)") == "abcd"


@pytest.mark.parametrize("table, sql, schema", [
    ("t", "INSERT OR FAIL INTO t(v) VALUES (?), (?)", None),
    # table-level ON CONFLICT FAIL, and a trigger's RAISE(FAIL), keep earlier rows too
    ("f", "INSERT INTO f(v) VALUES (?), (?)", "CREATE TABLE f(v UNIQUE ON CONFLICT FAIL)"),
    ("r", "INSERT INTO r(v) VALUES (?), (?)",
     "CREATE TABLE r(v); CREATE TRIGGER r_no_dup BEFORE INSERT ON r "
     "WHEN EXISTS (SELECT 1 FROM r WHERE v = NEW.v) BEGIN SELECT RAISE(FAIL, 'dup'); END"),
])
def test_a_failed_statement_keeps_nothing_even_where_sqlite_keeps_its_earlier_rows(
        worker, db_path, table, sql, schema):
    if schema:
        put(worker, schema)
        assert worker.run_once(timeout=0)
    first = put(worker, sql, ("m", "n"))  # the first run learns: one statement
    assert worker.run_once(timeout=0)
    assert first.future.result(0).rowcount == 2
    before = put(worker, f"INSERT INTO {table}(v) VALUES ('a')")
    bad = put(worker, sql, ("p", "p"))  # no savepoint now: fails after writing 'p' once
    after = put(worker, f"INSERT INTO {table}(v) VALUES ('z')")
    assert worker.run_once(timeout=0)
    assert isinstance(bad.future.exception(0), apsw.Error)
    assert before.future.result(0).rowcount == 1 and after.future.result(0).rowcount == 1
    assert scalar(db_path, f"SELECT group_concat(v, '') FROM (SELECT v FROM {table} ORDER BY v)"
                  ) == "amnz"
    assert worker.stats.snapshot(0)["reruns"] >= 1  # undone, and the others run again


def test_several_statements_always_get_a_savepoint(worker, db_path):
    sql = "INSERT INTO t(v) VALUES (?); INSERT INTO t(v) VALUES (?)"
    put(worker, sql, ("e", "f"))
    assert worker.run_once(timeout=0)
    assert worker.link.single[sql] is False
    bad = put(worker, sql, ("g", "e"))  # the second statement fails: the first is undone too
    assert worker.run_once(timeout=0)
    assert isinstance(bad.future.exception(0), apsw.ConstraintError)
    assert scalar(db_path, "SELECT count(*) FROM t WHERE v = 'g'") == 0
