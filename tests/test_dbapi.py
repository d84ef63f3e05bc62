"""The DB-API 2.0 adapter: sqlite3's shape over the gateway (no framework needed)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading

import pytest
from conftest import in_threads

from sqlite_gateway import Gateway, NestedCallError, TransactionControlError
from sqlite_gateway.integrations import dbapi, registry
from sqlite_gateway.integrations.txcontrol import parse


@pytest.fixture
def path(tmp_path):
    yield str(tmp_path / "app.db")
    registry.close_all()


@pytest.fixture
def conn(path):
    c = dbapi.connect(path)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x UNIQUE)")
    c.commit()
    yield c
    c.close()


def rows(path, sql="SELECT id, x FROM t ORDER BY id"):
    """What a fresh connection (another view) sees as committed."""
    other = dbapi.connect(path)
    try:
        return other.execute(sql).fetchall()
    finally:
        other.close()


def test_module_has_what_pep_249_and_orms_read():
    assert dbapi.apilevel == "2.0" and dbapi.paramstyle == "qmark"
    assert dbapi.threadsafety in (1, 2, 3)
    assert dbapi.sqlite_version_info >= (3, 35) and isinstance(dbapi.sqlite_version, str)
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
                 "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
                 "NotSupportedError"):
        assert issubclass(getattr(dbapi, name), Exception)
    assert issubclass(dbapi.IntegrityError, dbapi.DatabaseError)
    assert issubclass(dbapi.DatabaseError, dbapi.Error)


def test_connections_to_one_file_share_one_gateway(path):
    a, b = dbapi.connect(path), dbapi.connect(path)
    assert a.gateway is b.gateway and a.gateway.path == path


def test_memory_and_sqlite3_only_features_are_refused_clearly(path):
    with pytest.raises(dbapi.NotSupportedError, match="needs WAL"):
        dbapi.connect(":memory:")
    with pytest.raises(dbapi.NotSupportedError, match="detect_types"):
        dbapi.connect(path, detect_types=dbapi.PARSE_DECLTYPES)
    with pytest.raises(dbapi.NotSupportedError, match="uri"):
        dbapi.connect(path, uri=True)
    with pytest.raises(ValueError, match="begin"):
        dbapi.connect(path, begin="eventually")
    with pytest.raises(ValueError, match="isolation_level"):
        dbapi.connect(path, isolation_level="SOMETIMES")
    with pytest.raises(ValueError, match="readers"):
        dbapi.connect(path, readers=-1)
    assert not os.path.exists(path)  # refused before anything was opened
    with pytest.raises(dbapi.NotSupportedError, match="connection_setup"):
        dbapi.connect(path).create_function("twice", 1, lambda v: 2 * v)


def test_a_second_connection_with_other_options_is_refused(path):
    dbapi.connect(path, readers=2)
    dbapi.connect(path, readers="2")  # the same, as text
    dbapi.connect(path)  # none given: shares
    with pytest.raises(ValueError, match="readers=3"):
        dbapi.connect(path, readers=3)


def test_cursor_reports_description_rowcount_lastrowid(conn):
    cur = conn.cursor()
    cur.execute("INSERT INTO t (x) VALUES (?)", ("a",))
    assert (cur.rowcount, cur.lastrowid, cur.description) == (1, 1, None)
    cur.executemany("INSERT INTO t (x) VALUES (?)", [("b",), ("c",)])
    assert cur.rowcount == 2
    cur.execute("UPDATE t SET x = x || '!' WHERE id > 1")
    assert cur.rowcount == 2
    cur.execute("SELECT id, x FROM t WHERE id > 100")
    assert [d[0] for d in cur.description] == ["id", "x"]  # names, even with no row
    assert cur.fetchall() == [] and cur.rowcount == -1
    cur.execute("SELECT id, x FROM t ORDER BY id")
    assert cur.fetchone() == (1, "a")
    assert cur.fetchmany(1) == [(2, "b!")]
    assert list(cur) == [(3, "c!")]
    conn.commit()


def test_named_parameters_and_sqlite3s_default_date_adapters_bind(conn):
    when = datetime.datetime(2026, 12, 6, 5, 30, 1)
    conn.execute("INSERT INTO t (id, x) VALUES (:id, :x)", {"id": 7, "x": when})
    conn.execute("INSERT INTO t (id, x) VALUES (?, ?)", (8, when.date()))
    conn.commit()
    got = conn.execute("SELECT x FROM t ORDER BY id").fetchall()
    assert got == [("2026-12-06 05:30:01",), ("2026-12-06",)]  # as sqlite3 stores them


def test_implicit_transaction_commits_and_rolls_back(conn, path):
    conn.execute("INSERT INTO t (x) VALUES ('kept')")
    assert conn.in_transaction
    assert rows(path) == []  # not committed yet: another view does not see it
    conn.commit()
    assert rows(path) == [(1, "kept")]
    conn.execute("INSERT INTO t (x) VALUES ('undone')")
    conn.rollback()
    assert rows(path) == [(1, "kept")] and not conn.in_transaction


def test_a_read_only_transaction_never_holds_the_writer(conn):
    conn.execute("SELECT count(*) FROM t").fetchone()
    assert not conn.in_transaction  # as sqlite3: no BEGIN before a SELECT
    # The writer is free meanwhile: a write block from another thread enters at once.
    done = threading.Event()

    def other():
        with conn.gateway.writer(timeout=5) as w:
            w.execute("INSERT INTO t (x) VALUES ('other')")
        done.set()

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(10)
    assert done.is_set()


def test_integrity_error_is_the_dbapi_class_and_the_transaction_goes_on(conn, path):
    conn.execute("INSERT INTO t (x) VALUES ('a')")
    with pytest.raises(dbapi.IntegrityError, match="UNIQUE") as info:
        conn.execute("INSERT INTO t (x) VALUES ('a')")
    assert info.value.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE"
    conn.execute("INSERT INTO t (x) VALUES ('b')")
    conn.commit()
    assert rows(path) == [(1, "a"), (2, "b")]


def test_savepoint_statements_roll_back_alone(conn, path):
    conn.execute("INSERT INTO t (x) VALUES ('outer')")
    conn.execute("SAVEPOINT one")
    conn.execute("INSERT INTO t (x) VALUES ('inner')")
    conn.execute('SAVEPOINT "Two"')
    conn.execute("INSERT INTO t (x) VALUES ('innermost')")
    conn.execute("ROLLBACK TO SAVEPOINT ONE")  # undoes both; "one" stays open
    conn.execute("INSERT INTO t (x) VALUES ('again')")
    conn.execute("RELEASE one")
    with pytest.raises(dbapi.OperationalError, match="no such savepoint"):
        conn.execute("RELEASE one")
    conn.commit()
    assert [x for _, x in rows(path)] == ["outer", "again"]


def test_autocommit_mode_runs_the_transaction_statements_orms_send(path):
    c = dbapi.connect(path, isolation_level=None)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
    c.execute("INSERT INTO t (x) VALUES (1)")  # committed at once
    assert rows(path) == [(1, 1)]
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t (x) VALUES (2)")
    c.execute('SAVEPOINT "s1_x1"')
    c.execute("INSERT INTO t (x) VALUES (3)")
    c.execute('ROLLBACK TO SAVEPOINT "s1_x1"')
    c.execute('RELEASE SAVEPOINT "s1_x1"')
    assert rows(path) == [(1, 1)]
    c.execute("COMMIT")
    assert rows(path) == [(1, 1), (2, 2)]
    c.execute("BEGIN")
    c.execute("INSERT INTO t (x) VALUES (4)")
    c.execute("ROLLBACK")
    c.execute("SAVEPOINT lone")  # outside a transaction: SQLite starts one
    c.execute("INSERT INTO t (x) VALUES (5)")
    c.execute("RELEASE lone")  # and releasing it commits
    assert rows(path) == [(1, 1), (2, 2), (3, 5)]
    with pytest.raises(dbapi.OperationalError, match="no transaction is active"):
        c.execute("COMMIT")


def test_transaction_control_hidden_in_other_sql_is_refused(conn):
    for sql in ("BEGIN; DELETE FROM t", "COMMIT -- done", "/* x */ SAVEPOINT a",
                "SELECT 1; ROLLBACK"):
        assert parse(sql) is None
        with pytest.raises(TransactionControlError):
            conn.execute(sql)
    assert parse("  begin immediate transaction ;  ").op == "begin"
    assert parse('release savepoint "A b"').arg == "a b"


def test_immediate_transactions_make_read_modify_write_exact(path):
    setup = dbapi.connect(path)
    setup.execute("CREATE TABLE counter (n INTEGER)")
    setup.execute("INSERT INTO counter VALUES (0)")
    setup.commit()

    def bump():
        c = dbapi.connect(path, begin="immediate")
        for _ in range(10):
            n = c.execute("SELECT n FROM counter").fetchone()[0]
            c.execute("UPDATE counter SET n = ?", (n + 1,))
            c.commit()

    in_threads(bump, 4)
    assert rows(path, "SELECT n FROM counter") == [(40,)]


def test_a_second_write_block_in_the_same_thread_fails_at_once(conn):
    conn.execute("INSERT INTO t (x) VALUES ('held')")  # this thread holds the writer now
    other = dbapi.connect(conn.gateway.path)
    with pytest.raises(NestedCallError):
        other.execute("INSERT INTO t (x) VALUES ('waits for itself')")
    conn.commit()


def test_closed_connection_says_so(conn):
    conn.close()
    with pytest.raises(dbapi.ProgrammingError, match="closed database"):
        conn.execute("SELECT 1")


def test_an_existing_gateway_can_be_used(tmp_path):
    with Gateway(tmp_path / "own.db") as db:
        c = dbapi.connect(gateway=db)
        c.execute("CREATE TABLE t (x)")
        c.execute("INSERT INTO t VALUES (1)")
        c.commit()
        assert db.execute("SELECT x FROM t").scalar() == 1


def test_bound_connections_run_inside_the_transaction_fn(conn, path):
    db = conn.gateway

    def fn(handle):
        with dbapi.bound_to(db, handle):
            c = dbapi.connect(path)
            c.execute("INSERT INTO t (x) VALUES ('in fn')")
            c.commit()  # a savepoint's release: commits with the fn
            c.execute("INSERT INTO t (x) VALUES ('undone')")
            c.rollback()  # undoes only its own part
            return c.execute("SELECT count(*) FROM t").fetchone()[0]

    assert db.transaction(fn) == 1
    assert rows(path) == [(1, "in fn")]


def test_a_forked_child_gets_its_own_gateway(conn, path):
    conn.execute("INSERT INTO t (x) VALUES ('parent')")
    conn.commit()
    code = f"""
import os, sys
sys.path.insert(0, {os.getcwd()!r})
from sqlite_gateway.integrations import dbapi
c = dbapi.connect({path!r})
pid = os.fork()
if pid == 0:
    c.execute("INSERT INTO t (x) VALUES ('child')")
    c.commit()
    os._exit(0 if c.execute("SELECT count(*) FROM t").fetchone()[0] == 2 else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), c.execute("SELECT count(*) FROM t").fetchone()[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["0", "2"], out.stderr


def test_close_with_an_open_transaction_rolls_back_and_frees_the_writer(conn, path):
    conn.execute("INSERT INTO t (x) VALUES ('dropped')")
    conn.close()
    with conn.gateway.writer(timeout=5) as w:  # free at once, not after the hold limit
        w.execute("INSERT INTO t (x) VALUES ('next')")
    assert rows(path) == [(1, "next")]


def test_inside_a_transaction_fn_an_unbound_connection_is_refused(conn):
    db = conn.gateway

    def fn(handle):
        other = dbapi.connect(db.path)
        other.execute("SELECT count(*) FROM t")  # a reader would not see fn's writes

    with pytest.raises(NestedCallError):
        db.transaction(fn)


def test_a_failing_connection_setup_opens_nothing_and_a_later_connect_works(path):
    def broken(conn):
        raise RuntimeError("setup failed")

    with pytest.raises(RuntimeError, match="setup failed"):
        dbapi.connect(path, connection_setup=broken)
    c = dbapi.connect(path)
    assert c.execute("SELECT regexp('^a', 'abc')").fetchone() == (1,)
