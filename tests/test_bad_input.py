"""Bad input gets a clear error; nothing accepted is lost; the worker lives on."""

from __future__ import annotations

import apsw
import pytest

from sqlite_gateway.errors import TransactionControlError


@pytest.mark.parametrize("sql, params, error, message", [
    ("SELEC 1", (), apsw.SQLError, "syntax error"),
    ("INSERT INTO items(name) VALUES (?)", (1, 2), apsw.BindingsError, "bindings"),
    ("INSERT INTO items(name) VALUES (?)", (), apsw.BindingsError, "bindings"),
    ("INSERT INTO items(name) VALUES (?)", ({"a": 1},), TypeError, "argument #1"),
    ("INSERT INTO items(name) VALUES (?)", (object(),), TypeError, "argument #1"),
    ("INSERT INTO items(name) VALUES (:n)", {"m": 1}, KeyError, "n"),  # the missing name
    (None, (), TypeError, "sql must be a str"),
    (b"SELECT 1", (), TypeError, "sql must be a str"),
    ("   ", (), ValueError, "empty"),
    ("SELECT ?", "x", TypeError, "params must be"),
    ("SELECT ?", 5, TypeError, "params must be"),
])
def test_bad_input_gets_a_clear_error_and_the_gateway_lives_on(gateway, sql, params, error,
                                                               message):
    good = gateway.submit("INSERT INTO items(name) VALUES ('accepted')")
    with pytest.raises(error, match=message):
        gateway.execute(sql, params)
    assert good.result(10).rowcount == 1
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1


@pytest.mark.parametrize("sql", [
    "BEGIN", "begin immediate", "  COMMIT", "/* hi */ ROLLBACK", "END", "END TRANSACTION",
    "SAVEPOINT x", "RELEASE x", "RELEASE SAVEPOINT sqlite_gateway_request",
    "ROLLBACK TO sqlite_gateway_request", "COMMIT; INSERT INTO items(name) VALUES ('z')",
])
def test_transaction_control_is_refused_with_a_pointer_to_transaction(gateway, sql):
    with pytest.raises(TransactionControlError, match=r"db\.transaction\(fn\)"):
        gateway.execute(sql)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_statements_before_a_refused_one_in_the_same_string_are_undone(gateway):
    with pytest.raises(TransactionControlError):
        gateway.execute("INSERT INTO items(name) VALUES ('first'); COMMIT")
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_transaction_control_used_by_an_exclusive_fn_does_not_leak_into_execute(gateway):
    def own_transaction(conn):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO items(name) VALUES ('exclusive')")
        conn.execute("COMMIT")

    gateway.run_exclusive(own_transaction)
    with pytest.raises(TransactionControlError):
        gateway.execute("COMMIT")
    with pytest.raises(TransactionControlError):
        gateway.execute("BEGIN")
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1


def test_an_exclusive_fn_that_leaves_a_transaction_open_is_rolled_back(gateway):
    gateway.run_exclusive(lambda conn: conn.execute(
        "BEGIN; INSERT INTO items(name) VALUES ('dangling')").fetchall())
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_executemany_and_transaction_check_their_arguments(gateway):
    with pytest.raises(TypeError, match="seq_of_params"):
        gateway.executemany("INSERT INTO items(name) VALUES (?)", 5)
    with pytest.raises(TypeError, match="params must be"):
        gateway.executemany("INSERT INTO items(name) VALUES (?)", ["ab"])
    with pytest.raises(TypeError, match="callable"):
        gateway.transaction("not a function")
    with pytest.raises(TypeError, match="callable"):
        gateway.submit_transaction(None)
    assert gateway.execute("SELECT 1").scalar() == 1


def test_a_huge_blob_and_odd_text_round_trip(gateway):
    blob = bytes(range(256)) * 4096
    text = "'; DROP TABLE items; -- \x00 ü 🙂"
    gateway.execute("CREATE TABLE b(data BLOB, t TEXT)")
    gateway.execute("INSERT INTO b VALUES (?, ?)", (blob, text))
    assert gateway.execute("SELECT data, t FROM b").rows == ((blob, text),)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0
