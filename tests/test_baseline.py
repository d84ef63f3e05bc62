"""The retry baseline (sqlite_gateway.baseline): correct, bounded, and Gateway-shaped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import apsw
import pytest

from conftest import child_python, scalar
from sqlite_gateway import GatewayClosed, Result
from sqlite_gateway.baseline import RetryGateway
from sqlite_gateway.errors import TransactionControlError

# Holds the write lock from outside: BEGIN IMMEDIATE, say so, wait, commit.
HOLDER = """
import sys, time, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO counters VALUES (99, 0)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.fixture
def retry_db(db_path: str):
    db = RetryGateway(db_path).start()
    db.execute("CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute("INSERT INTO counters VALUES (1, 0)")
    try:
        yield db
    finally:
        db.close()


def test_eight_threads_increment_one_counter_exactly(retry_db: RetryGateway, db_path: str):
    failures: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(100):
                retry_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 800
    stats = retry_db.stats()
    assert stats["errors"] == 0 and stats["requests"] >= 800
    assert stats["retries"] <= stats["busy_errors"]


def test_result_is_a_gateway_result(retry_db: RetryGateway):
    res = retry_db.executemany("INSERT INTO counters VALUES (?, 0)", [(2,), (3,)])
    assert isinstance(res, Result) and res.rowcount == 2 and res.lastrowid == 3
    res = retry_db.execute("SELECT id, n FROM counters ORDER BY id")
    assert res.rows == ((1, 0), (2, 0), (3, 0)) and res.columns == ("id", "n")
    future = retry_db.submit("UPDATE counters SET n = 5")
    assert future.done() and future.result().rowcount == 3
    retry_db.flush()


def test_failing_transaction_fn_leaves_no_trace(retry_db: RetryGateway, db_path: str):
    def fn(conn, new_id: int) -> None:
        conn.execute("INSERT INTO counters VALUES (?, 0)", (new_id,))
        conn.execute("UPDATE counters SET n = 7 WHERE id = 1")
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        retry_db.transaction(fn, 42)
    assert scalar(db_path, "SELECT count(*) FROM counters") == 1
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 0
    future = retry_db.submit_transaction(fn, 43)
    assert isinstance(future.exception(0), ValueError)
    assert retry_db.transaction(lambda conn: conn.execute("SELECT n FROM counters").scalar()) == 0


def test_sqlite_error_reaches_the_caller_with_its_own_class(retry_db: RetryGateway):
    with pytest.raises(apsw.ConstraintError):
        retry_db.execute("INSERT INTO counters VALUES (1, 0)")
    with pytest.raises(apsw.SQLError):
        retry_db.execute("SELECT * FROM no_such_table")
    assert isinstance(retry_db.submit("INSERT INTO counters VALUES (1, 0)").exception(0),
                      apsw.ConstraintError)
    with pytest.raises(TransactionControlError, match="transaction"):
        retry_db.execute("UPDATE counters SET n = 1; COMMIT")
    assert retry_db.execute("SELECT n FROM counters").scalar() == 0  # the UPDATE was undone
    assert retry_db.stats()["errors"] == 4


def test_outside_lock_holder_busy_past_deadline_then_success(retry_db: RetryGateway,
                                                             db_path: str):
    with child_python(HOLDER, db_path, "1.5", stdout=-1) as holder:
        assert holder.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(holder.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(30)
        assert line == ["locked\n"], "the holder never took the lock"
        locked_at = time.monotonic()
        began = time.monotonic()
        with pytest.raises(apsw.BusyError):
            retry_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1", timeout=0.3)
        assert 0.3 <= time.monotonic() - began < 1.5
        assert retry_db.stats()["retries"] > 0
        # The default deadline (30 s) outlasts the holder: retried until it commits.
        assert retry_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1").rowcount == 1
        assert time.monotonic() - locked_at >= 1.0
        assert holder.wait(30) == 0
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 1
    assert scalar(db_path, "SELECT count(*) FROM counters") == 2  # the holder's row too
    stats = retry_db.stats()
    assert stats["errors"] == 1 and stats["busy_errors"] > stats["retries"] > 0


def test_close_is_idempotent_and_final(db_path: str):
    db = RetryGateway(db_path, queue_size=10, readers=2)  # Gateway options, ignored
    with db:
        db.execute("CREATE TABLE t(x)")
        done = threading.Event()
        t = threading.Thread(target=lambda: (db.execute("INSERT INTO t VALUES (1)"),
                                             done.set()))
        t.start()
        t.join(30)
        assert done.is_set()
    db.close()
    for call in (lambda: db.execute("SELECT 1"), lambda: db.submit("SELECT 1"),
                 lambda: db.transaction(lambda conn: None), db.flush):
        with pytest.raises(GatewayClosed):
            call()
    assert db.stats()["state"] == "closed"
    assert scalar(db_path, "SELECT count(*) FROM t") == 1
    with pytest.raises(TypeError, match="batch_size"):
        RetryGateway(db_path, batch_size=3)


def test_nested_call_is_refused(retry_db: RetryGateway):
    from sqlite_gateway.errors import NestedCallError
    with pytest.raises(NestedCallError):
        retry_db.transaction(lambda conn: retry_db.execute("SELECT 1"))
    assert retry_db.execute("SELECT 1").scalar() == 1  # the thread is usable again


def test_database_file_is_in_wal_mode(retry_db: RetryGateway, tmp_path: Path, db_path: str):
    assert scalar(db_path, "PRAGMA journal_mode") == "wal"
