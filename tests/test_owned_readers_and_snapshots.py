"""Readers a thread keeps while it lives, the lean read, and db.snapshot().

A thread that reads keeps its reader (no hand-over per read) and gives it back
when it ends; an idle owner never makes another thread wait. A snapshot runs
several reads in one consistent view. Every read keeps its guarantees:
read-your-writes, the caller's deadline, close() stopping it, fork refusal.
"""

from __future__ import annotations

import gc
import threading

import pytest
from conftest import HANG_S, run_python, wait_until

from sqlite_gateway import (Gateway, GatewayClosed, GatewayError, NestedCallError,
                            RequestTimeout)
from sqlite_gateway.snapshot import SnapshotWriteError

COUNT = "SELECT count(*) FROM t"
# A read whose length is set by its parameter: short to learn it, long to be stopped.
COUNT_TO = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
            "SELECT count(*) FROM c")
ENDLESS = 10**12


@pytest.fixture
def db(db_path):
    with Gateway(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(x)")
        yield db


def _pool(db):
    return db.core.readers


def _in_thread(target):
    """Run ``target`` in a thread that has ended (and been collected) on return."""
    out = []
    thread = threading.Thread(target=lambda: out.append(target()))
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), "the reading thread hung"
    del thread
    gc.collect()
    return out[0] if out else None


# -- readers a thread keeps ---------------------------------------------------------

def test_a_thread_keeps_its_reader_and_gives_it_back_when_it_ends(db_path):
    with Gateway(db_path, readers=2) as db:
        db.execute("CREATE TABLE t(x)")  # (tried on a reader first: this thread keeps one)
        pool = _pool(db)
        mine = pool._local.owner.reader
        holding, release = threading.Event(), threading.Event()

        def reader_thread():
            assert db.execute(COUNT).scalar() == 0
            holding.set()
            assert release.wait(HANG_S)

        thread = threading.Thread(target=reader_thread)
        thread.start()
        assert holding.wait(HANG_S)
        (theirs,) = [r for r in pool._all if r is not mine]
        assert theirs.owner is not None and theirs not in pool._free  # kept by its thread
        release.set()
        thread.join(HANG_S)
        del thread
        gc.collect()
        wait_until(lambda: theirs.owner is None and theirs in pool._free,
                   "the ended thread's reader back in the pool")
        assert mine.owner is not None  # the living owner keeps its own
        assert db.execute(COUNT).scalar() == 0


def test_an_idle_owner_never_makes_another_thread_wait(db):
    holding, release = threading.Event(), threading.Event()

    def owner():  # reads once (keeps the only reader), then idles
        db.execute(COUNT)
        holding.set()
        assert release.wait(HANG_S)

    thread = threading.Thread(target=owner)
    thread.start()
    try:
        assert holding.wait(HANG_S)
        # The only reader is owned by an idle thread: this read takes it at once.
        assert _in_thread(lambda: db.execute(COUNT, timeout=HANG_S).scalar()) == 0
        assert db.stats()["reads"] >= 2
    finally:
        release.set()
        thread.join(HANG_S)
    assert db.execute(COUNT).scalar() == 0  # the first owner reads again (another reader)


def test_the_lean_read_sees_every_acknowledged_write(db):
    for i in range(50):  # the text is known after the first: the lean read serves the rest
        db.execute("INSERT INTO t VALUES (?)", (i,))
        assert db.execute(COUNT).scalar() == i + 1


def test_the_lean_read_stops_at_the_callers_deadline(db_path):
    with Gateway(db_path, readers=1, timeout=0.3) as db:
        assert db.execute(COUNT_TO, (10,)).scalar() == 10  # learned: one read-only statement
        assert db.execute(COUNT_TO, (10,)).scalar() == 10  # the lean read
        with pytest.raises(RequestTimeout) as caught:
            db.execute(COUNT_TO, (ENDLESS,))
        assert caught.value.started
        assert db.execute(COUNT_TO, (5,)).scalar() == 5  # the reader still serves


def test_close_stops_a_lean_read_and_closes_idle_owned_readers(db_path):
    db = Gateway(db_path, readers=2, timeout=None).start()
    db.execute(COUNT_TO, (10,))
    db.execute(COUNT_TO, (10,))
    errors, running = [], threading.Event()

    def endless():
        running.set()
        try:
            db.execute(COUNT_TO, (ENDLESS,))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=endless)
    thread.start()
    assert running.wait(HANG_S)
    wait_until(lambda: any(r.running for r in _pool(db)._all), "the endless read running")
    db.close(timeout=HANG_S)
    thread.join(HANG_S)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], GatewayClosed)
    assert all(r.closed for r in _pool(db)._all)  # the main thread's idle one too
    with pytest.raises(GatewayClosed):
        db.execute(COUNT_TO, (10,))


def test_a_forked_child_refuses_a_read_the_parent_served_lean(db_path):
    code = f"""
import os, sys
from sqlite_gateway import Gateway, GatewayClosed
db = Gateway({db_path!r}, readers=2).start()
db.execute("CREATE TABLE t(x)")
db.execute("{COUNT}"); db.execute("{COUNT}")  # this thread owns a reader; the text is known
pid = os.fork()
if pid == 0:
    try:
        db.execute("{COUNT}")
        os._exit(3)
    except GatewayClosed:
        os._exit(0)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
db.close()
"""
    child = run_python(code)
    assert child.stdout.strip() == "0", child.stderr


# -- snapshots ------------------------------------------------------------------------

def test_a_snapshot_sees_one_moment_while_the_writer_commits(db_path):
    # Two readers: a text seen for the first time is tried on a reader (SQLite
    # judges it), and the snapshot holds one.
    with Gateway(db_path, readers=2) as db:
        _sees_one_moment(db)


def _sees_one_moment(db):
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (1)")
    with db.snapshot() as s:
        assert s.execute(COUNT).scalar() == 1  # the write acknowledged before entering
        # Another thread's write is acknowledged (committed) while the snapshot is open.
        _in_thread(lambda: db.execute("INSERT INTO t VALUES (2)"))
        assert s.execute(COUNT).scalar() == 1
        assert s.execute("SELECT max(x) FROM t").scalar() == 1
    assert db.execute(COUNT).scalar() == 2


def test_a_snapshot_refuses_a_write_and_runs_none_of_it(db):
    with db.snapshot() as s:
        with pytest.raises(SnapshotWriteError):
            s.execute("INSERT INTO t VALUES (9)")
        assert s.execute(COUNT).scalar() == 0
    assert db.execute(COUNT).scalar() == 0


def test_a_snapshot_statement_stops_at_its_deadline(db):
    with db.snapshot(timeout=0.3) as s:
        with pytest.raises(RequestTimeout):
            s.execute(COUNT_TO, (ENDLESS,))
        assert s.execute(COUNT_TO, (3,)).scalar() == 3


def test_close_during_a_snapshot_stops_it(db_path):
    db = Gateway(db_path, readers=1, timeout=None).start()
    db.execute("CREATE TABLE t(x)")
    inside, closed, after = threading.Event(), threading.Event(), []

    def reader_thread():
        with db.snapshot() as s:
            s.execute(COUNT)
            inside.set()
            assert closed.wait(HANG_S)
            try:
                s.execute(COUNT)
            except BaseException as exc:
                after.append(exc)

    thread = threading.Thread(target=reader_thread)
    thread.start()
    assert inside.wait(HANG_S)
    db.close(timeout=HANG_S)  # returns: a snapshot between statements is not waited for
    closed.set()
    thread.join(HANG_S)
    assert not thread.is_alive()
    assert len(after) == 1 and isinstance(after[0], GatewayClosed)
    assert all(r.closed for r in _pool(db)._all)  # closed as the snapshot gave it back


def test_close_stops_a_running_snapshot_statement(db_path):
    db = Gateway(db_path, readers=1, timeout=None).start()
    errors, inside = [], threading.Event()

    def reader_thread():
        with db.snapshot() as s:
            inside.set()
            try:
                s.execute(COUNT_TO, (ENDLESS,))
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=reader_thread)
    thread.start()
    assert inside.wait(HANG_S)
    wait_until(lambda: _pool(db)._all[0].running, "the snapshot's statement running")
    db.close(timeout=HANG_S)
    thread.join(HANG_S)
    assert len(errors) == 1 and isinstance(errors[0], GatewayClosed)


def test_a_snapshot_is_refused_inside_a_transaction_fn(db):
    def fn(conn):
        with db.snapshot():
            pass

    with pytest.raises(NestedCallError):
        db.transaction(fn)


def test_a_snapshot_is_for_the_thread_inside_its_with(db):
    with db.snapshot() as s:
        error = _in_thread(lambda: pytest.raises(GatewayError, s.execute, COUNT).value)
    assert "thread inside its 'with'" in str(error)
    with pytest.raises(GatewayError, match="thread inside its 'with'"):
        s.execute(COUNT)  # after the with


def test_snapshot_needs_a_reader_pool(db_path):
    with Gateway(db_path, readers=0) as db:
        with pytest.raises(GatewayError, match="readers >= 1"):
            db.snapshot()


def test_a_known_text_in_a_snapshot_stops_at_its_deadline_and_the_snapshot_goes_on(db):
    db.execute(COUNT_TO, (10,))  # learned: one read-only statement, fixed columns
    db.execute("INSERT INTO t VALUES (?)", (1,))  # learned: a write (straight to the writer)
    with db.snapshot(timeout=0.3) as s:
        assert s.execute(COUNT_TO, (10,)).scalar() == 10  # the lean way, in the snapshot
        with pytest.raises(RequestTimeout) as caught:
            s.execute(COUNT_TO, (ENDLESS,))
        assert caught.value.started
        assert s.execute(COUNT_TO, (3,)).scalar() == 3
        db.execute("INSERT INTO t VALUES (?)", (2,))
        assert s.execute(COUNT).scalar() == 1  # still the view taken on entering
    assert db.execute(COUNT).scalar() == 2


@pytest.mark.parametrize("sql, fixed", [
    ("SELECT count(*) FROM t", True),
    ("SELECT x, count(*) AS n FROM t GROUP BY x", True),
    ("SELECT * FROM t", False),
    ("SELECT t.* FROM t", False),
    ("SELECT count(*), * FROM t", False),
    ("SELECT x*2 FROM t", False),  # a product: kept off the lean read (conservative)
    ("SELECT x FROM t /* a comment */", False),
])
def test_only_texts_whose_columns_cannot_change_take_the_lean_read(db, sql, fixed):
    from sqlite_gateway.readerpool import _names_fixed_by_text
    assert _names_fixed_by_text(sql) is fixed
    db.execute(sql)
    db.execute(sql)
    assert (sql in _pool(db)._columns) is fixed


def test_a_free_reader_looked_at_by_its_former_owner_stays_in_the_pool(db_path):
    with Gateway(db_path, readers=1) as db:
        pool = _pool(db)
        (reader,) = pool._all
        assert reader in pool._free
        reader.lock.acquire()  # a former owner's look at it, at that moment
        try:
            assert pool._pop_free() is None
        finally:
            reader.lock.release()
        assert reader in pool._free  # still free: the next read takes it
        assert _in_thread(lambda: db.execute("SELECT 7", timeout=HANG_S).scalar()) == 7


def test_a_lean_read_on_a_shared_reader_stops_at_the_callers_deadline(db_path):
    with Gateway(db_path, readers=1, timeout=0.3) as db:
        pool = _pool(db)
        assert db.execute(COUNT_TO, (10,)).scalar() == 10  # learned; this thread owns the reader
        # Another thread takes it from this idle owner: from then on readers are shared.
        assert _in_thread(lambda: db.execute(COUNT_TO, (10,)).scalar()) == 10
        assert pool._shared and pool._all[0].owner is None
        caught = _in_thread(lambda: pytest.raises(RequestTimeout, db.execute, COUNT_TO,
                                                  (ENDLESS,)).value)
        assert caught.started
        assert _in_thread(lambda: db.execute(COUNT_TO, (5,)).scalar()) == 5
        assert pool._free == pool._all  # given back each time
