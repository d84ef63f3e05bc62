"""Reader lanes: reads beside the writer, read-your-writes, and no write through a reader."""

from __future__ import annotations

import threading
import time

import apsw
import pytest
from conftest import HANG_S, wait_until

from sqlite_gateway import Gateway, GatewayClosed, RequestTimeout
from sqlite_gateway.errors import TransactionControlError
from sqlite_gateway.reader import Reader


@pytest.fixture(params=["inline", "threads"])
def rdb(request, db_path):
    db = Gateway(db_path, readers=9, read_mode=request.param).start()
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    try:
        yield db
    finally:
        db.close(timeout=30)


def _open_connections(path):
    return [c for c in apsw.connections() if c.filename == path]


def test_reads_run_while_a_long_write_transaction_holds_the_writer(rdb):
    rdb.execute("INSERT INTO items(name) VALUES ('committed')")
    inside, release = threading.Event(), threading.Event()

    def long_write(conn):
        conn.execute("INSERT INTO items(name) VALUES ('uncommitted')")
        inside.set()
        assert release.wait(30)

    fut = rdb.submit_transaction(long_write)
    assert inside.wait(10)
    try:
        # The writer is busy inside long_write: these reads must not wait for it.
        rows = rdb.execute("SELECT name FROM items", timeout=5).rows
        assert rows == (("committed",),)  # and they do not see uncommitted data
        assert not fut.done()
    finally:
        release.set()
    fut.result(10)
    assert rdb.execute("SELECT count(*) FROM items").scalar() == 2
    assert rdb.stats()["reads"] >= 2


def test_read_your_writes_under_concurrency(rdb):
    misses = []

    def writer_then_reader(k):
        for i in range(50):
            name = f"{k}-{i}"
            rdb.execute("INSERT INTO items(name) VALUES (?)", (name,))
            seen = rdb.execute("SELECT count(*) FROM items WHERE name = ?", (name,)).scalar()
            if seen != 1:
                misses.append(name)

    threads = [threading.Thread(target=writer_then_reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert misses == []
    figures = rdb.stats()
    assert figures["reads"] >= 400  # the reads were served by readers, not the writer
    assert rdb.execute("SELECT count(*) FROM items").scalar() == 400  # the inserts committed


def test_a_text_judged_a_write_goes_straight_to_the_writer_next_time(rdb):
    sql = "INSERT INTO items(name) VALUES (?)"
    rdb.execute(sql, ("first",))
    passed = rdb.stats()["reads_to_writer"]
    for i in range(5):
        rdb.execute(sql, (str(i),))
    assert rdb.stats()["reads_to_writer"] == passed  # no reader tried it again
    assert rdb.execute("SELECT count(*) FROM items").scalar() == 6


@pytest.mark.parametrize("sql", [
    "INSERT INTO items(name) VALUES ('w')",
    "WITH x(n) AS (SELECT 'cte') INSERT INTO items(name) SELECT n FROM x",
    "SELECT 1; INSERT INTO items(name) VALUES ('second statement')",
    "PRAGMA user_version = 7",
    "CREATE TABLE other(x)",
])
def test_a_write_is_routed_to_the_writer_and_commits(rdb, sql):
    before = rdb.stats()["reads_to_writer"]
    rdb.execute(sql)
    assert rdb.stats()["reads_to_writer"] == before + 1
    writes = rdb.execute("SELECT (SELECT count(*) FROM items) + (SELECT user_version FROM "
                         "pragma_user_version) + (SELECT count(*) FROM sqlite_master "
                         "WHERE name = 'other')").scalar()
    assert writes >= 1


def test_a_reader_connection_cannot_write_at_all(db_path):
    with Gateway(db_path) as db:
        db.execute("CREATE TABLE t(x)")
        reader = Reader(db_path, 1.0, None, set())
        try:
            with pytest.raises(apsw.ReadOnlyError):
                reader.conn.exec_trace = None  # even with routing switched off
                reader.conn.execute("INSERT INTO t VALUES (1)")
        finally:
            reader.close()
        assert db.execute("SELECT count(*) FROM t").scalar() == 0


def test_transaction_control_is_refused_on_the_read_path_too(rdb):
    for sql in ("BEGIN", "COMMIT", "SAVEPOINT a"):
        with pytest.raises(TransactionControlError):
            rdb.execute(sql)


def test_read_errors_keep_their_class(rdb):
    with pytest.raises(apsw.SQLError, match="no such table"):
        rdb.execute("SELECT * FROM missing")
    assert rdb.execute("SELECT 1").scalar() == 1


def _entering_reads(monkeypatch, on_enter) -> None:
    """Call ``on_enter(reader, sql)`` on the reading thread as each read starts on a
    reader connection (in either read mode): a state to wait on instead of a sleep."""
    original = Reader.read

    def read(self, sql, *args, **kwargs):
        on_enter(self, sql)
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(Reader, "read", read)


def test_threads_past_the_readers_count_wait_for_a_free_reader_not_for_the_writer(
        db_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def hold():  # a read that keeps its reader busy until released
        entered.set()
        assert release.wait(HANG_S), "never released"
        return 1

    def on_enter(reader, sql):  # readers open lazily: give each one the function
        reader.conn.create_scalar_function("hold", hold, 0)

    _entering_reads(monkeypatch, on_enter)
    with Gateway(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(x)")
        before = db.stats()
        a = threading.Thread(target=lambda: db.execute("SELECT hold()", timeout=HANG_S))
        a.start()
        assert entered.wait(HANG_S)
        answers = []
        b = threading.Thread(target=lambda: answers.append(db.execute("SELECT 2").scalar()))
        b.start()
        # b waits for the one reader (not for the writer, not answered elsewhere).
        wait_until(lambda: len(db.core.readers._waiters) == 1,
                   "the second read to wait for a reader")
        assert answers == [] and db.stats()["reads_to_writer"] == before["reads_to_writer"]
        release.set()
        b.join(HANG_S)
        a.join(HANG_S)
        assert answers == [2] and not a.is_alive()
        figures = db.stats()
        assert figures["reads"] == before["reads"] + 2  # both served by the one reader
        assert figures["reads_to_writer"] == before["reads_to_writer"]


SLOW_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
             "SELECT count(*) FROM c")
ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c")  # never ends by itself
BOUND_S = 10  # a bound that detects a hang, not a timing goal


def test_many_threads_past_the_readers_count_all_read_on_readers(db_path):
    """A text is a write only if SQLite says so: crowding never sends reads to the writer."""
    with Gateway(db_path, readers=4) as db:
        db.execute("CREATE TABLE t(x)")
        db.execute("INSERT INTO t VALUES (1)")
        to_writer = db.stats()["reads_to_writer"]  # the two writes above, judged by SQLite
        errors = []

        def reads():
            try:
                for _ in range(50):
                    assert db.execute("SELECT x FROM t").scalar() == 1
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=reads) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        figures = db.stats()
        assert figures["reads"] >= 2000 and figures["reads_to_writer"] == to_writer
        assert len(_open_connections(db_path)) <= 1 + 4  # the writer and at most 4 readers


@pytest.mark.parametrize("mode", ["inline", "threads"])
def test_a_runaway_read_stops_at_its_callers_deadline_and_close_is_bounded(
        db_path, mode, monkeypatch):
    endless_started = threading.Event()
    _entering_reads(monkeypatch, lambda reader, sql: sql == ENDLESS and endless_started.set())
    db = Gateway(db_path, readers=2, read_mode=mode).start()
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        db.execute(ENDLESS, timeout=0.3)
    assert time.monotonic() - start < BOUND_S
    assert db.execute("SELECT 1").scalar() == 1  # the reader serves on
    # One with no deadline of its own: close() stops it and returns.
    outcome = []

    def endless():
        try:
            db.execute(ENDLESS, timeout=None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    endless_started.clear()  # the first one (with a deadline) set it
    t = threading.Thread(target=endless)
    t.start()
    assert endless_started.wait(BOUND_S)  # close() below meets a read that runs
    start = time.monotonic()
    db.close(timeout=BOUND_S)
    t.join(BOUND_S)
    assert time.monotonic() - start < BOUND_S and not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], GatewayClosed)


def test_the_read_counters_never_go_down_as_threads_come_and_go(db_path):
    with Gateway(db_path, readers=2) as db:
        db.execute("CREATE TABLE t(x)")
        seen = []
        for _ in range(10):
            threads = [threading.Thread(target=db.execute, args=("SELECT count(*) FROM t",))
                       for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            seen.append(db.stats()["reads"])
        assert seen == sorted(seen) and seen[-1] == 40


def test_close_closes_the_reader_connections(db_path):
    for mode in ("inline", "threads"):
        db = Gateway(db_path, readers=3, read_mode=mode).start()
        threads = [threading.Thread(target=db.execute, args=("SELECT 1",)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(_open_connections(db_path)) >= 2  # the writer and at least one reader
        db.close()
        assert _open_connections(db_path) == []


def test_readers_option_is_checked(db_path):
    with pytest.raises(ValueError, match="readers"):
        Gateway(db_path, readers=-1)
    with pytest.raises(ValueError, match="read_mode"):
        Gateway(db_path, readers=1, read_mode="magic")
