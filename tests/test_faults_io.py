"""The disk fails under the gateway: disk full, failing writes, fsyncs and reads.

Each test checks that the callers hit get a clear error (SQLite's own class),
that nothing acknowledged is lost (an outside apsw connection reads every
acknowledged row afterwards, and integrity_check is ok), that nobody hangs,
and that the SAME gateway serves again once the fault is gone.
"""

from __future__ import annotations

import threading
import time
import uuid

import apsw
import pytest
from conftest import WorkerBlocker, read_only

from benchmarks.vfs.fault import ALWAYS, FaultVFS
from sqlite_gateway import Gateway, GatewayClosed
from sqlite_gateway.gateway import State

SCHEMA = """
CREATE TABLE acked(id INTEGER PRIMARY KEY, kind TEXT NOT NULL);
CREATE TABLE pairs(id INTEGER NOT NULL, half INTEGER NOT NULL);
CREATE TABLE blobs(b BLOB);
"""
ANSWER_S = 10  # a bound that detects a hang, not a timing goal


@pytest.fixture
def vfs():
    shim = FaultVFS(f"faulty-{uuid.uuid4().hex[:8]}")
    try:
        yield shim
    finally:
        shim.faults.off()
        shim.unregister()


@pytest.fixture
def db(db_path, vfs):
    gateway = Gateway(db_path, vfs=vfs.name).start()
    gateway.execute(SCHEMA)
    try:
        yield gateway
    finally:
        vfs.faults.off()
        gateway.close(timeout=30)


def pair(conn, i):
    conn.execute("INSERT INTO pairs VALUES (?, 1)", (i,))
    conn.execute("INSERT INTO pairs VALUES (?, 2)", (i,))


def commit_rows(db, ids):
    for i in ids:
        assert db.execute("INSERT INTO acked VALUES (?, 'before')", (i,)).rowcount == 1
        db.transaction(pair, i)


def mixed_batch(db, base):
    """Three kinds of request queued behind a blocker, so that they share one batch."""
    blocker = WorkerBlocker(db)
    futures = [db.submit("INSERT INTO acked VALUES (?, 'batch')", (base,)),
               db.submit_transaction(pair, base + 1),
               db.submit("UPDATE acked SET kind = 'touched' WHERE id = 1")]
    return blocker, futures


def check_file(path, acked):
    """An outside view after the gateway closed: every acknowledged row, no torn pair."""
    conn = read_only(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        present = {r[0] for r in conn.execute("SELECT id FROM acked")}
        assert set(acked) - present == set(), "acknowledged writes were lost"
        torn = conn.execute("SELECT count(*) FROM (SELECT id FROM pairs GROUP BY id "
                            "HAVING count(*) != 2)").fetchall()[0][0]
        assert torn == 0, "a transaction is half there"
    finally:
        conn.close()


def set_max_page_count(db, pages):
    return db.run_exclusive(
        lambda conn: conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchall()[0][0])


def test_disk_full_fails_only_the_write_that_needs_pages(db, db_path):
    commit_rows(db, range(1, 51))
    pages = db.run_exclusive(lambda conn: conn.execute("PRAGMA page_count").fetchall()[0][0])
    assert set_max_page_count(db, pages) == pages  # the file may not grow any more
    blocker = WorkerBlocker(db)
    small = db.submit("UPDATE acked SET kind = 'small' WHERE id = 1")  # fits in its page
    big = db.submit("INSERT INTO blobs VALUES (zeroblob(200000))")  # needs new pages
    fn = db.submit_transaction(lambda conn: conn.execute(
        "UPDATE acked SET kind = 'fn' WHERE id = 2").rowcount)
    blocker.done()
    assert isinstance(big.exception(ANSWER_S), apsw.FullError)
    assert small.result(ANSWER_S).rowcount == 1
    assert fn.result(ANSWER_S) == 1
    assert db.execute("SELECT kind FROM acked WHERE id IN (1, 2) ORDER BY id").rows == (
        ("small",), ("fn",))
    assert db.execute("SELECT count(*) FROM acked").scalar() == 50
    with pytest.raises(apsw.FullError):  # still full, still answering
        db.execute("INSERT INTO blobs VALUES (zeroblob(200000))")
    set_max_page_count(db, 1 << 30)  # the fault is gone
    assert db.execute("INSERT INTO blobs VALUES (zeroblob(200000))").rowcount == 1
    assert db.state is State.RUNNING
    db.close()
    check_file(db_path, range(1, 51))


@pytest.mark.parametrize("fault", ["writes", "syncs"])
def test_a_commit_whose_wal_write_or_fsync_fails_fails_its_batch_and_the_gateway_recovers(
        db, db_path, vfs, fault, caplog):
    commit_rows(db, range(1, 51))
    blocker, futures = mixed_batch(db, 1000)
    vfs.faults.arm(only="-wal", **{fault: 1})
    blocker.done()
    for future in futures:  # the COMMIT failed: every request of the batch gets its error
        assert isinstance(future.exception(ANSWER_S), apsw.IOError)
    assert vfs.faults.injected[fault[:-1]] == 1
    # The same gateway serves again, on a new connection (opened after the answers).
    assert db.state is State.RUNNING
    commit_rows(db, range(51, 61))
    assert "reopening its connection after IOError" in caplog.text
    assert db.execute("SELECT count(*) FROM acked WHERE id <= 60").scalar() == 60
    db.close()
    # A failed COMMIT is not acknowledged, and its outcome is unknown (after a
    # failed fsync SQLite may find the frames again): it is all there or not at all.
    check_file(db_path, range(1, 61))


def test_writes_failing_until_the_fault_is_gone_each_get_an_error_then_all_succeed(
        db, db_path, vfs):
    commit_rows(db, range(1, 21))
    vfs.faults.arm(writes=ALWAYS, only="-wal")
    errors = []

    def write(k):
        try:
            db.execute("INSERT INTO acked VALUES (?, 'during')", (100 + k,))
        except apsw.IOError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ANSWER_S * 3)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert len(errors) == 8
    with pytest.raises(apsw.IOError):
        db.transaction(pair, 200)
    vfs.faults.off()
    commit_rows(db, range(21, 31))
    assert db.state is State.RUNNING
    db.close()
    check_file(db_path, range(1, 31))


def test_a_failing_read_on_the_writer_fails_that_read_and_the_next_one_works(
        db, db_path, vfs):
    commit_rows(db, range(1, 11))
    outside = apsw.Connection(db_path)  # the default VFS: unaffected by the switches
    try:
        outside.execute("INSERT INTO acked VALUES (999, 'outside')")
    finally:
        outside.close()
    # The writer's cached pages are now stale, so the next read goes to the file.
    vfs.faults.arm(reads=1)
    with pytest.raises(apsw.IOError, match="injected read failure"):
        db.execute("SELECT count(*) FROM acked")
    assert vfs.faults.injected["read"] == 1
    assert db.execute("SELECT count(*) FROM acked").scalar() == 11
    commit_rows(db, range(11, 21))
    db.close()
    check_file(db_path, [*range(1, 21), 999])


def test_a_failing_read_on_a_reader_reaches_its_caller_and_the_reader_goes_on(
        db_path, vfs):
    with Gateway(db_path, vfs=vfs.name, readers=2) as db:  # one is the main thread's
        db.execute(SCHEMA)
        commit_rows(db, range(1, 11))
        outcome = []

        def read_twice():
            vfs.faults.arm(reads=1)
            try:
                db.execute("SELECT count(*) FROM acked")
            except apsw.IOError as exc:
                outcome.append(exc)
            outcome.append(db.execute("SELECT count(*) FROM acked").scalar())

        thread = threading.Thread(target=read_twice)  # a fresh thread: a fresh reader, cold
        thread.start()
        thread.join(ANSWER_S)
        assert isinstance(outcome[0], apsw.IOError) and outcome[1] == 10
        assert db.stats()["reads"] == 1
    check_file(db_path, range(1, 11))


def test_when_the_connection_cannot_be_reopened_the_gateway_breaks_and_a_new_one_works(
        db, db_path, vfs, caplog):
    commit_rows(db, range(1, 21))
    blocker, futures = mixed_batch(db, 1000)
    vfs.faults.arm(writes=ALWAYS, reads=ALWAYS)  # the COMMIT fails, and so does reopening
    blocker.done()
    for future in futures:
        assert isinstance(future.exception(ANSWER_S), apsw.IOError)
    try:  # queued while the worker tries to reopen, or refused once it has died
        queued = db.submit("INSERT INTO acked VALUES (2000, 'queued')")
    except GatewayClosed:
        pass
    else:
        assert isinstance(queued.exception(ANSWER_S), GatewayClosed)
    with pytest.raises(GatewayClosed, match="broken.*injected read failure"):
        db.execute("SELECT 1")
    assert db.state is State.BROKEN
    assert "reopening failed" in caplog.text
    db.close()
    vfs.faults.off()
    with Gateway(db_path, vfs=vfs.name) as again:  # the app restarts it
        commit_rows(again, range(21, 31))
        assert again.execute("SELECT count(*) FROM acked WHERE id <= 30").scalar() == 30
    check_file(db_path, range(1, 31))


def test_a_sync_delay_slows_every_fsync_until_reset_and_a_bad_one_is_refused(db_path, vfs):
    delay = 0.02  # far above a fsync here, so the commits' time is at least the delays
    conn = apsw.Connection(db_path, vfs=vfs.name)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=FULL")  # WAL + FULL: each COMMIT syncs the WAL
        conn.execute("CREATE TABLE t(x)")
        vfs.faults.sync_delay = delay
        started = time.monotonic()
        for i in range(3):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        assert time.monotonic() - started >= 3 * delay  # a lower bound: sleep never returns early
        for bad in (-0.001, float("nan"), "0.1", True):
            with pytest.raises(ValueError, match="delay must be a number of seconds >= 0"):
                vfs.faults.sync_delay = bad
        assert vfs.faults.sync_delay == delay  # a refused value changes nothing
        vfs.faults.reset()
        assert vfs.faults.sync_delay == 0.0
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
        assert vfs.faults.injected["sync"] == 0  # slow is not failing
    finally:
        conn.close()


def test_refused_opens_fail_every_new_connection_until_reset(db_path, vfs):
    vfs.faults.refuse_opens = True
    with pytest.raises(apsw.CantOpenError, match="injected"):
        apsw.Connection(db_path, vfs=vfs.name)
    assert vfs.faults.injected["open"] == 1
    vfs.faults.reset()
    conn = apsw.Connection(db_path, vfs=vfs.name)
    try:
        conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()
    assert vfs.faults.injected["open"] == 1


def test_reset_disarms_armed_failures_too(db_path, vfs):
    conn = apsw.Connection(db_path, vfs=vfs.name)
    try:
        conn.execute("CREATE TABLE t(x)")
        vfs.faults.arm(writes=ALWAYS)
        with pytest.raises(apsw.IOError, match="injected write failure"):
            conn.execute("INSERT INTO t VALUES (1)")
        vfs.faults.reset()
        conn.execute("INSERT INTO t VALUES (2)")
        assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]
    finally:
        conn.close()
