"""Reader lanes: reads beside the writer, read-your-writes, and no write through a reader."""

from __future__ import annotations

import threading

import apsw
import pytest

from sqlite_gateway import Gateway
from sqlite_gateway.errors import TransactionControlError
from sqlite_gateway.readers import Reader


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
        reader = Reader(db_path, busy_timeout=1.0)
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


def test_inline_threads_past_the_limit_read_through_the_writer(db_path):
    with Gateway(db_path, readers=1) as db:
        db.transaction(lambda conn: conn.execute("CREATE TABLE t(x)"))
        has_place, release = threading.Event(), threading.Event()

        def holder():
            assert db.execute("SELECT 1").scalar() == 1
            has_place.set()
            assert release.wait(10)

        a = threading.Thread(target=holder)
        a.start()
        assert has_place.wait(10)
        assert db.stats()["reads"] == 1
        assert db.execute("SELECT 2").scalar() == 2  # no place left: served by the writer
        assert db.stats()["reads"] == 1
        release.set()
        a.join(10)
        # A thread that has ended gives its place to the next one.
        b = threading.Thread(target=lambda: db.execute("SELECT 3"))
        b.start()
        b.join(10)
        assert db.stats()["reads"] == 2


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
