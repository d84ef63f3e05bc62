"""Result.columns is there with or without rows; rowcount counts the statement's own rows."""

from __future__ import annotations

import threading

import pytest

from sqlite_gateway import Gateway
from sqlite_gateway import shape as shape_module

SCHEMA = """
CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT UNIQUE);
CREATE TABLE child(id INTEGER PRIMARY KEY,
                   parent INTEGER REFERENCES parent(id) ON DELETE CASCADE);
CREATE TABLE audit(what TEXT);
CREATE TRIGGER parent_audit AFTER UPDATE ON parent BEGIN
    INSERT INTO audit VALUES ('update ' || new.id);
    INSERT INTO audit VALUES ('again ' || new.id);
END;
"""


@pytest.fixture(params=[0, 2], ids=["writer-only", "readers"])
def db(db_path, request):
    with Gateway(db_path, readers=request.param) as gateway:
        gateway.execute(SCHEMA)
        gateway.executemany("INSERT INTO parent(id, name) VALUES (?, ?)",
                            [(1, "a"), (2, "b"), (3, "c")])
        gateway.executemany("INSERT INTO child(parent) VALUES (?)", [(1,), (1,), (2,)])
        yield gateway


def test_a_query_that_finds_nothing_has_its_columns(db):
    sql = "SELECT id, name AS label FROM parent WHERE id = ?"
    for _ in range(3):  # first sight, then known: the same answer
        result = db.execute(sql, (99,))
        assert result.rows == () and result.columns == ("id", "label")
        assert db.execute(sql, (1,)).columns == ("id", "label")
    assert db.execute("SELECT * FROM child WHERE 0").columns == ("id", "parent")


def test_columns_in_a_transaction_fn_and_a_write_block(db):
    def fn(conn):
        return conn.execute("SELECT name FROM parent WHERE id = -1").columns

    assert db.transaction(fn) == ("name",)
    with db.writer() as w:
        assert w.execute("SELECT name, id FROM parent WHERE id = -1").columns == ("name", "id")
        assert w.execute("DELETE FROM child WHERE id = -1 RETURNING id, parent").columns == (
            "id", "parent")


def test_statements_that_return_no_data_have_no_columns(db):
    assert db.execute("UPDATE parent SET name = name WHERE id = -1").columns == ()
    assert db.execute("CREATE TABLE t2(x)").columns == ()
    assert db.execute("INSERT INTO t2 VALUES (1)").columns == ()


def test_a_string_of_statements_gives_the_first_query_columns(db):
    result = db.execute("UPDATE parent SET name = name WHERE id = -1; "
                        "SELECT id AS x FROM parent WHERE id = -1; SELECT 1 AS y")
    assert result.columns == ("y",) and result.rows == ((1,),)  # the one that returned a row
    result = db.execute("INSERT INTO audit VALUES ('x'); SELECT what FROM audit WHERE 0")
    assert result.columns == ("what",) and result.rows == ()


def test_columns_follow_a_schema_change_for_a_query_that_found_nothing(db):
    sql = "SELECT * FROM audit WHERE what = 'none'"
    assert db.execute(sql).columns == ("what",)
    db.execute("ALTER TABLE audit ADD COLUMN at REAL")
    assert db.execute(sql).columns == ("what", "at")


@pytest.mark.parametrize("rows", [True, False], ids=["rows", "no-rows"])
@pytest.mark.parametrize("seen", [True, False], ids=["known-text", "new-text"])
def test_columns_after_a_schema_change_on_the_writer_and_the_readers(db, rows, seen):
    db.execute("INSERT INTO audit VALUES ('x')")
    where = "1" if rows else "0"
    sql = f"SELECT * FROM audit WHERE {where} LIMIT 1"
    db.execute("SELECT count(*) FROM audit")  # every connection has loaded the schema
    if seen:
        assert db.execute(sql).columns == ("what",)
        assert db.transaction(lambda conn: conn.execute(sql).columns) == ("what",)
    db.execute("ALTER TABLE audit ADD COLUMN at REAL")
    db.execute("ALTER TABLE audit DROP COLUMN what")
    assert db.execute(sql).columns == ("at",)
    assert db.transaction(lambda conn: conn.execute(sql).columns) == ("at",)
    with db.writer() as w:
        assert w.execute(sql).columns == ("at",)


def test_rowcount_counts_the_statement_not_its_trigger_rows(db):
    result = db.execute("UPDATE parent SET name = name || '!' WHERE id IN (1, 2)")
    assert result.rowcount == 2  # its trigger inserted 4 audit rows: not counted
    assert db.execute("SELECT count(*) FROM audit").scalar() == 4


def test_rowcount_counts_the_statement_not_its_cascades(db):
    result = db.execute("DELETE FROM parent WHERE id = 1")
    assert result.rowcount == 1  # and two child rows went with it
    assert db.execute("SELECT count(*) FROM child").scalar() == 1


def test_rowcount_of_replace_counts_the_inserted_row(db):
    result = db.execute("INSERT OR REPLACE INTO parent(id, name) VALUES (9, 'a')")
    assert result.rowcount == 1  # the row it replaced (name 'a', id 1) is not counted


def test_rowcount_of_executemany_is_the_sum_over_parameter_sets(db):
    result = db.executemany("UPDATE parent SET name = ? || name WHERE id = ?",
                            [("x", 1), ("y", 2), ("z", 99), ("w", 3)])
    assert result.rowcount == 3
    assert db.execute("SELECT count(*) FROM audit").scalar() == 6


def test_rowcount_of_a_string_of_statements_is_their_sum(db):
    result = db.execute("UPDATE parent SET name = name WHERE id = 1; SELECT 1; "
                        "DELETE FROM child WHERE id = 3; UPDATE parent SET name = name")
    assert result.rowcount == 1 + 1 + 3


def test_rowcount_is_zero_for_a_query_even_after_a_write(db):
    db.execute("UPDATE parent SET name = name")
    assert db.execute("SELECT name FROM parent").rowcount == 0

    def fn(conn):
        conn.execute("UPDATE parent SET name = name")
        return conn.execute("SELECT name FROM parent").rowcount

    assert db.transaction(fn) == 0


def test_rowcount_in_fns_blocks_and_write_behind(db):
    def fn(conn):
        return conn.execute("UPDATE parent SET name = name WHERE id < 3").rowcount

    assert db.transaction(fn) == 2
    with db.writer() as w:
        assert w.execute("UPDATE parent SET name = name").rowcount == 3
    assert db.submit("DELETE FROM parent WHERE id = 2").result(30).rowcount == 1
    assert db.bulk("UPDATE parent SET name = name WHERE id = ?", [(1,), (3,), (7,)]) == 2


def test_the_memo_of_texts_without_columns_is_bounded_and_shared_by_threads(db, monkeypatch):
    from sqlite_gateway import memo
    monkeypatch.setattr(memo, "_MAX_ITEMS", 50)
    errors = []

    def many_texts(k):
        try:
            for i in range(200):
                result = db.execute(f"SELECT {i} AS n{k}, name FROM parent WHERE id = -{i}")
                assert result.columns == (f"n{k}", "name")
                assert db.execute(f"UPDATE parent SET name = name WHERE id = -{i} - {k}"
                                  ).columns == ()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=many_texts, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert 0 < len(shape_module.columnless) <= 50
    assert not any(text.startswith("SELECT") for text in shape_module.columnless)


def test_a_tracer_set_on_the_connection_still_sees_every_statement(db_path):
    import apsw

    from sqlite_gateway.connection import TransactionGuard, run_sql

    conn = apsw.Connection(db_path)
    seen = []
    conn.exec_trace = lambda cursor, sql, bindings: seen.append(sql) or "ABORT" not in sql
    try:
        conn.execute("CREATE TABLE t(x)")
        run_sql(conn, TransactionGuard(), "INSERT INTO t VALUES (1); SELECT 2", ())
        with pytest.raises(apsw.ExecTraceAbort):
            run_sql(conn, TransactionGuard(), "INSERT INTO t VALUES (3) /* ABORT */", ())
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
        assert any("SELECT 2" in sql for sql in seen)
    finally:
        conn.close()


def test_trailing_comments_and_executemany_texts_keep_their_columns(db):
    assert db.execute("SELECT name FROM parent WHERE 0; -- nothing found").columns == ("name",)
    assert db.execute("SELECT name FROM parent WHERE 0 /* a comment */").columns == ("name",)
    sql = "UPDATE parent SET name = ? WHERE id = ? RETURNING id"
    assert db.executemany(sql, [("x", 99), ("y", 98)]).columns == ("id",)  # no row back
    assert db.executemany(sql, [("x", 1)]).rows == ((1,),)
    assert db.execute(sql, ("z", 97)).columns == ("id",)
    assert db.executemany("INSERT INTO audit VALUES (?)", []).columns == ()
