"""The baselines (benchmarks/baselines.py): correct, bounded, and Gateway-shaped.

RetryGateway (busy timeout 0, backoff and retry) and BusyGateway (busy timeout,
BEGIN IMMEDIATE for writes, plain reads) share their plumbing; the tests of
that run on both (``old_way``), then each one's own behaviour."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from conftest import HANG_S, child_python, scalar
from sqlite_gateway import GatewayClosed, Result
from benchmarks.baselines import BusyGateway, RetryGateway
from sqlite_gateway.errors import TransactionControlError

# Holds the write lock from outside: BEGIN IMMEDIATE, say so, commit when told (a line
# on stdin), say so.
HOLDER = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO counters VALUES (99, 0)")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("committed", flush=True)
"""
DEFAULT_TIMEOUT = 30.0  # the baselines' default deadline (Gateway's): far past any wait here


class Holder:
    """The HOLDER child: ``release()`` makes it commit and returns once it has."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.child = child
        assert self._line() == "locked", "the holder never took the lock"

    def _line(self) -> str:
        assert self.child.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.child.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(HANG_S)
        return line[0].strip() if line else "(nothing)"

    def release(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write("commit\n")
        self.child.stdin.flush()
        assert self._line() == "committed"
        assert self.child.wait(HANG_S) == 0


def _counters(db):
    db.execute("CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute("INSERT INTO counters VALUES (1, 0)")
    return db


@pytest.fixture
def retry_db(db_path: str):
    db = _counters(RetryGateway(db_path).start())
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=[RetryGateway, BusyGateway])
def old_way(request, db_path: str):
    """Each baseline in turn, on a counters table."""
    db = _counters(request.param(db_path).start())
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def busy_db(db_path: str):
    db = _counters(BusyGateway(db_path, busy_timeout=5.0).start())
    try:
        yield db
    finally:
        db.close()


@contextlib.contextmanager
def holding_the_lock(db_path: str) -> Iterator[Holder]:
    """A child process that holds the write lock until released; entered once it has it."""
    with child_python(HOLDER, db_path, stdin=-1, stdout=-1) as child:
        yield Holder(child)


def test_eight_threads_increment_one_counter_exactly(old_way, db_path: str):
    failures: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(100):
                old_way.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
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
    stats = old_way.stats()
    assert stats["errors"] == 0 and stats["requests"] >= 800
    assert stats["retries"] <= stats["busy_errors"]


def test_result_is_a_gateway_result(old_way):
    res = old_way.executemany("INSERT INTO counters VALUES (?, 0)", [(2,), (3,)])
    assert isinstance(res, Result) and res.rowcount == 2 and res.lastrowid == 3
    res = old_way.execute("SELECT id, n FROM counters ORDER BY id")
    assert res.rows == ((1, 0), (2, 0), (3, 0)) and res.columns == ("id", "n")
    future = old_way.submit("UPDATE counters SET n = 5")
    assert future.done() and future.result().rowcount == 3
    old_way.flush()


def test_failing_transaction_fn_leaves_no_trace(old_way, db_path: str):
    def fn(conn, new_id: int) -> None:
        conn.execute("INSERT INTO counters VALUES (?, 0)", (new_id,))
        conn.execute("UPDATE counters SET n = 7 WHERE id = 1")
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        old_way.transaction(fn, 42)
    assert scalar(db_path, "SELECT count(*) FROM counters") == 1
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 0
    future = old_way.submit_transaction(fn, 43)
    assert isinstance(future.exception(0), ValueError)
    assert old_way.transaction(lambda conn: conn.execute("SELECT n FROM counters").scalar()) == 0


def test_sqlite_error_reaches_the_caller_with_its_own_class(old_way):
    with pytest.raises(apsw.ConstraintError):
        old_way.execute("INSERT INTO counters VALUES (1, 0)")
    with pytest.raises(apsw.SQLError):
        old_way.execute("SELECT * FROM no_such_table")
    assert isinstance(old_way.submit("INSERT INTO counters VALUES (1, 0)").exception(0),
                      apsw.ConstraintError)
    with pytest.raises(TransactionControlError, match="transaction"):
        old_way.execute("UPDATE counters SET n = 1; COMMIT")
    assert old_way.execute("SELECT n FROM counters").scalar() == 0  # the UPDATE was undone
    assert old_way.stats()["errors"] == 4


def test_outside_lock_holder_busy_past_deadline_then_success(retry_db: RetryGateway,
                                                             db_path: str):
    with holding_the_lock(db_path) as holder:
        began = time.monotonic()
        with pytest.raises(apsw.BusyError):
            retry_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1", timeout=0.3)
        # Retried until its own deadline, not the default one (a hang detector).
        assert 0.3 <= time.monotonic() - began < DEFAULT_TIMEOUT / 3
        assert retry_db.stats()["retries"] > 0
        # The default deadline outlasts the holder: retried until it commits. The lock
        # is released once this call has been refused and is backing off (the stats
        # count retries only when a call ends: a wrapper on the backoff tells).
        backing_off = threading.Event()
        backoff = retry_db._backoff

        def noted_backoff(attempt: int, deadline: float) -> bool:
            backing_off.set()
            return backoff(attempt, deadline)

        retry_db._backoff = noted_backoff  # type: ignore[method-assign]

        def release_once_backing_off() -> None:
            assert backing_off.wait(HANG_S), "the write never met the lock"
            holder.release()

        releaser = threading.Thread(target=release_once_backing_off)
        releaser.start()
        assert retry_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1").rowcount == 1
        releaser.join(HANG_S)
        assert not releaser.is_alive()
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 1
    assert scalar(db_path, "SELECT count(*) FROM counters") == 2  # the holder's row too
    stats = retry_db.stats()
    assert stats["errors"] == 1 and stats["busy_errors"] > stats["retries"] > 0


@pytest.mark.parametrize("old_way_class", [RetryGateway, BusyGateway])
def test_close_is_idempotent_and_final(db_path: str, old_way_class):
    db = old_way_class(db_path, queue_size=10, readers=2)  # Gateway options, ignored
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
        old_way_class(db_path, batch_size=3)


def test_nested_call_is_refused(old_way):
    from sqlite_gateway.errors import NestedCallError
    with pytest.raises(NestedCallError):
        old_way.transaction(lambda conn: old_way.execute("SELECT 1"))
    assert old_way.execute("SELECT 1").scalar() == 1  # the thread is usable again


def test_database_file_is_in_wal_mode(old_way, tmp_path: Path, db_path: str):
    assert scalar(db_path, "PRAGMA journal_mode") == "wal"


# -- BusyGateway: busy timeout, BEGIN IMMEDIATE for writes, plain reads -----------------

def test_busy_read_then_write_transactions_never_fail_on_a_lock_upgrade(busy_db: BusyGateway,
                                                                        db_path: str):
    """Each fn reads, then writes: with a deferred BEGIN two such fns deadlock on the
    upgrade and SQLite fails one at once, whatever the busy timeout; BEGIN IMMEDIATE
    takes the lock first, so every one waits its turn and the count is exact."""
    failures: list[BaseException] = []

    def read_then_write(conn) -> None:
        n = conn.execute("SELECT n FROM counters WHERE id = 1").scalar()
        conn.execute("UPDATE counters SET n = ? WHERE id = 1", (n + 1,))

    def bump() -> None:
        try:
            for _ in range(50):
                busy_db.transaction(read_then_write)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 400
    stats = busy_db.stats()
    assert stats["errors"] == 0 and stats["retries"] == 0 and stats["busy_errors"] == 0


def test_busy_write_waits_for_an_outside_lock_then_reads_do_not(busy_db: BusyGateway,
                                                               db_path: str):
    with holding_the_lock(db_path) as holder:
        # A read is a plain statement on a WAL snapshot: it does not wait for the writer
        # (which never lets go by itself: a waiting read would fail after busy_timeout).
        assert busy_db.execute("SELECT n FROM counters WHERE id = 1").scalar() == 0
        # A call's timeout below busy_timeout bounds its wait; then BusyError, no retry.
        began = time.monotonic()
        with pytest.raises(apsw.BusyError):
            busy_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1", timeout=0.3)
        assert 0.25 <= time.monotonic() - began < busy_db.busy_timeout  # not the busy timeout
        # busy_timeout (5 s) outlasts the holder: SQLite's handler waits until it commits.
        answers: list[object] = []
        calling = threading.Event()

        def write() -> None:
            calling.set()
            answers.append(busy_db.execute("UPDATE counters SET n = n + 1 WHERE id = 1"))

        writer = threading.Thread(target=write)
        writer.start()
        assert calling.wait(HANG_S)
        holder.release()
        writer.join(HANG_S)
        assert [r.rowcount for r in answers] == [1]  # type: ignore[attr-defined]
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 1
    stats = busy_db.stats()
    assert stats["busy_errors"] == 1 and stats["errors"] == 1 and stats["retries"] == 0


def test_busy_gives_up_after_its_busy_timeout(db_path: str):
    db = _counters(BusyGateway(db_path, busy_timeout=0.3).start())
    try:
        with holding_the_lock(db_path) as holder:
            began = time.monotonic()
            with pytest.raises(apsw.BusyError):
                db.transaction(lambda conn: conn.execute("UPDATE counters SET n = 9"))
            # At its busy timeout, not at the call's (default) deadline: a hang detector.
            assert 0.25 <= time.monotonic() - began < DEFAULT_TIMEOUT / 3
            holder.release()
    finally:
        db.close()
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 0


def test_busy_text_with_a_write_runs_as_one_unit(busy_db: BusyGateway, db_path: str):
    """SQLite says which statements write: a text that reads then writes runs whole
    as a write; when its last statement fails nothing of it is kept."""
    res = busy_db.execute("SELECT n FROM counters; UPDATE counters SET n = 3 WHERE id = 1")
    assert res.rowcount == 1
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 3
    with pytest.raises(apsw.ConstraintError):
        busy_db.execute("SELECT 1; UPDATE counters SET n = 4; INSERT INTO counters VALUES (1, 0)")
    assert scalar(db_path, "SELECT n FROM counters WHERE id = 1") == 3
    with pytest.raises(TransactionControlError):
        busy_db.execute("SELECT 1; BEGIN")
    assert busy_db.bulk("INSERT INTO counters VALUES (?, 0)", [(i,) for i in range(2, 1200)]) \
        == 1198
    assert busy_db.execute("SELECT count(*) FROM counters").scalar() == 1199


def test_busy_options_are_checked(db_path: str):
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="busy_timeout"):
            BusyGateway(db_path, busy_timeout=bad)
    with pytest.raises(TypeError, match="max_delay"):
        BusyGateway(db_path, max_delay=1.0)  # RetryGateway's, not BusyGateway's
    with BusyGateway(db_path, busy_timeout=0.5) as db:
        with pytest.raises(ValueError, match="timeout"):
            db.execute("SELECT 1", timeout=-1)
        assert db.execute("SELECT 1").scalar() == 1


@pytest.mark.parametrize("old_way_class", [RetryGateway, BusyGateway])
def test_the_old_ways_read_the_gateways_options(db_path: str, old_way_class):
    """One Options value builds any backend: every option is checked, each class
    uses its own subset (timeout, synchronous, vfs; busy_timeout for busy)."""
    from sqlite_gateway import Options, State
    with pytest.raises(ValueError, match="^queue_size"):  # ignored, but still checked
        old_way_class(db_path, queue_size=0)
    with pytest.raises(ValueError, match="^timeout .*deadline"):  # a deadline is needed
        old_way_class(db_path, timeout=None)
    db = old_way_class(db_path, Options(synchronous="normal", batch_max=3), timeout=7)
    assert (db.timeout, db.synchronous, db.state) == (7, "NORMAL", State.NEW)
    with db:
        assert db.state is State.RUNNING
        assert db.execute("PRAGMA synchronous").scalar() == 1  # NORMAL
        with pytest.raises(ValueError, match="timeout"):
            db.execute("SELECT 1", timeout=float("nan"))
        db.execute("CREATE TABLE t(x)")
        with pytest.raises(apsw.SQLError):
            db.execute("INSERT INTO nowhere VALUES (1)")
        stats = db.stats()
    assert db.state is State.CLOSED
    # Each call is one unit: counted as a batch of one, committed or not.
    assert (stats["requests"], stats["errors"]) == (3, 1)
    assert stats["batches"] == 3 and stats["commits"] == 2
    assert stats["latency_window"] == 3 and stats["latency_max_ms"] >= stats["latency_p50_ms"]
