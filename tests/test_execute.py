"""execute / executemany: results, and that an answer means committed."""

from __future__ import annotations

from conftest import read_only, scalar

from sqlite_gateway import Gateway


def test_execute_returns_rows_rowcount_and_lastrowid(gateway):
    r = gateway.execute("INSERT INTO items(name) VALUES (?)", ("a",))
    assert (r.rowcount, r.lastrowid, r.rows) == (1, 1, ())
    r = gateway.execute("SELECT id, name FROM items WHERE name = :n", {"n": "a"})
    assert r.rows == ((1, "a"),)
    assert r.columns == ("id", "name")


def test_executemany_counts_every_parameter_set(gateway):
    r = gateway.executemany("INSERT INTO items(name) VALUES (?)", [(f"n{i}",) for i in range(50)])
    assert r.rowcount == 50
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 50


def test_executemany_accepts_a_generator(gateway):
    r = gateway.executemany("INSERT INTO items(name) VALUES (?)", ((f"g{i}",) for i in range(3)))
    assert r.rowcount == 3


def test_several_statements_in_one_string_all_run(gateway):
    gateway.execute("INSERT INTO items(name) VALUES ('x'); INSERT INTO items(name) VALUES ('y')")
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 2


def test_an_answer_means_the_row_is_visible_to_another_connection(gateway, db_path):
    gateway.execute("INSERT INTO items(name) VALUES ('seen')")
    assert scalar(db_path, "SELECT count(*) FROM items WHERE name='seen'") == 1


def test_connection_is_wal_full_with_foreign_keys(gateway):
    def pragmas(conn):
        return [conn.execute(f"PRAGMA {p}").fetchall()[0][0]
                for p in ("journal_mode", "synchronous", "foreign_keys")]
    assert gateway.run_exclusive(pragmas) == ["wal", 2, 1]


def test_synchronous_normal_is_applied(db_path):
    with Gateway(db_path, synchronous="normal") as db:
        assert db.run_exclusive(lambda c: c.execute("PRAGMA synchronous").fetchall()[0][0]) == 1


def test_foreign_keys_are_enforced(gateway):
    import apsw
    import pytest
    gateway.execute("CREATE TABLE child(id INTEGER PRIMARY KEY, item INTEGER REFERENCES items(id))")
    with pytest.raises(apsw.ConstraintError, match="FOREIGN KEY"):
        gateway.execute("INSERT INTO child(item) VALUES (999)")


def test_run_exclusive_runs_outside_a_transaction(gateway, db_path):
    gateway.execute("INSERT INTO items(name) VALUES ('v')")
    # VACUUM and a checkpoint cannot run inside a transaction.
    gateway.run_exclusive(lambda conn: conn.execute("VACUUM").fetchall())
    assert gateway.run_exclusive(lambda conn: conn.in_transaction) is False
    gateway.run_exclusive(lambda conn: conn.wal_checkpoint(mode=0))
    conn = read_only(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
