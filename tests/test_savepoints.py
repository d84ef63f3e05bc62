"""Savepoints on a transaction fn's conn: nested units that roll back alone."""

from __future__ import annotations

import threading

import apsw
import pytest

from sqlite_gateway import Gateway, GatewayError, TransactionControlError


def names(db: Gateway) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM items ORDER BY id").rows]


def test_an_inner_unit_that_raises_rolls_back_alone_and_the_fn_goes_on(gateway):
    def fn(conn):
        conn.execute("INSERT INTO items(name) VALUES ('kept before')")
        with pytest.raises(apsw.ConstraintError):
            with conn.savepoint():
                conn.execute("INSERT INTO items(name) VALUES ('undone')")
                conn.execute("INSERT INTO items(name) VALUES ('kept before')")  # UNIQUE
        conn.execute("INSERT INTO items(name) VALUES ('kept after')")
        return conn.execute("SELECT count(*) FROM items").scalar()

    assert gateway.transaction(fn) == 2
    assert names(gateway) == ["kept before", "kept after"]


def test_a_unit_that_ends_normally_commits_with_the_fn(gateway):
    def fn(conn):
        with conn.savepoint():
            conn.execute("INSERT INTO items(name) VALUES ('a')")
        return "ok"

    assert gateway.transaction(fn) == "ok"
    assert names(gateway) == ["a"]


def test_a_released_unit_is_still_undone_when_the_fn_fails(gateway):
    def fn(conn):
        with conn.savepoint():
            conn.execute("INSERT INTO items(name) VALUES ('a')")
        raise KeyError("boom")

    with pytest.raises(KeyError):
        gateway.transaction(fn)
    assert names(gateway) == []


def test_units_nest_to_any_depth_and_each_rolls_back_alone(gateway):
    depth = 40

    def nest(conn, level):
        conn.execute("INSERT INTO items(name) VALUES (?)", (f"level {level}",))
        if level == depth:
            raise ValueError("deepest")
        with conn.savepoint():
            try:
                with conn.savepoint():
                    nest(conn, level + 1)
            except ValueError:
                if level % 2:
                    raise  # odd levels pass the failure up one more unit

    gateway.transaction(lambda conn: nest(conn, 0))
    kept = names(gateway)
    # Level n+1 is undone when level n re-raises (odd n) into its outer unit... the
    # outcome is checked against the same nesting done with SQLite savepoints by hand.
    raw = apsw.Connection(":memory:")
    raw.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    counter = iter(range(10**6))

    def by_hand(level):
        raw.execute("INSERT INTO items(name) VALUES (?)", (f"level {level}",))
        if level == depth:
            raise ValueError("deepest")
        outer, inner = f"o{next(counter)}", f"i{next(counter)}"
        raw.execute(f"SAVEPOINT {outer}")
        try:
            raw.execute(f"SAVEPOINT {inner}")
            try:
                by_hand(level + 1)
            except ValueError:
                raw.execute(f"ROLLBACK TO {inner}")
                raw.execute(f"RELEASE {inner}")
                raise
            raw.execute(f"RELEASE {inner}")
        except ValueError:
            if level % 2:
                raw.execute(f"ROLLBACK TO {outer}")
                raw.execute(f"RELEASE {outer}")
                raise
        raw.execute(f"RELEASE {outer}")

    raw.execute("BEGIN")
    by_hand(0)
    raw.execute("COMMIT")
    assert kept == [row[0] for row in raw.execute("SELECT name FROM items ORDER BY id")]
    assert "level 0" in kept and f"level {depth}" not in kept


def test_rollback_undoes_the_unit_so_far_and_keeps_it_open(gateway):
    def fn(conn):
        with conn.savepoint() as unit:
            conn.execute("INSERT INTO items(name) VALUES ('undone')")
            unit.rollback()
            conn.execute("INSERT INTO items(name) VALUES ('kept')")

    gateway.transaction(fn)
    assert names(gateway) == ["kept"]


def test_a_savepoint_used_after_its_fn_returned_is_one_clear_error(gateway):
    kept = {}

    def fn(conn):
        kept["unit"] = conn.savepoint()
        kept["entered"] = conn.savepoint().__enter__()  # left open: released with the fn

    gateway.transaction(fn)
    with pytest.raises(GatewayError, match="only inside that call|after its transaction fn"):
        kept["unit"].__enter__()
    with pytest.raises(GatewayError, match="after its transaction fn returned"):
        kept["entered"].__exit__(None, None, None)


def test_exiting_an_outer_unit_before_an_inner_one_is_refused(gateway):
    def fn(conn):
        outer = conn.savepoint().__enter__()
        inner = conn.savepoint().__enter__()
        conn.execute("INSERT INTO items(name) VALUES ('a')")
        with pytest.raises(GatewayError, match="innermost first"):
            outer.__exit__(None, None, None)
        with pytest.raises(GatewayError, match="innermost first"):
            outer.rollback()
        inner.__exit__(None, None, None)
        outer.__exit__(None, None, None)
        return conn.execute("SELECT count(*) FROM items").scalar()

    assert gateway.transaction(fn) == 1
    assert names(gateway) == ["a"]


def test_a_savepoint_is_entered_once(gateway):
    def fn(conn):
        unit = conn.savepoint()
        with unit:
            pass
        with pytest.raises(GatewayError, match="entered already"):
            unit.__enter__()
        with pytest.raises(GatewayError, match="not open"):
            unit.__exit__(None, None, None)

    gateway.transaction(fn)


def test_user_savepoint_sql_stays_refused_even_with_a_gateway_like_name(gateway):
    def fn(conn):
        with conn.savepoint():
            for sql in ("SAVEPOINT sqlite_gateway_0", "RELEASE sqlite_gateway",
                        "ROLLBACK TO sqlite_gateway_0"):
                with pytest.raises(TransactionControlError):
                    conn.execute(sql)
            conn.execute("INSERT INTO items(name) VALUES ('a')")

    gateway.transaction(fn)
    assert names(gateway) == ["a"]
    with pytest.raises(TransactionControlError):
        gateway.execute("SAVEPOINT x")


def test_a_statement_that_rolls_back_everything_inside_a_unit_fails_the_fn_cleanly(gateway):
    gateway.execute("INSERT INTO items(name) VALUES ('taken')")

    def fn(conn):
        with conn.savepoint():
            conn.execute("INSERT OR ROLLBACK INTO items(name) VALUES ('taken')")

    with pytest.raises(apsw.ConstraintError):
        gateway.transaction(fn)

    def swallowing(conn):
        with conn.savepoint():
            try:
                conn.execute("INSERT OR ROLLBACK INTO items(name) VALUES ('taken')")
            except apsw.ConstraintError:
                pass
        return "returned"

    with pytest.raises(GatewayError, match="rolled back as a whole"):
        gateway.transaction(swallowing)
    assert names(gateway) == ["taken"]


def test_units_in_fns_that_share_a_batch_stay_apart(db_path):
    with Gateway(db_path, inline=False) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        gate = threading.Event()
        db.submit_transaction(lambda conn: gate.wait(30))
        futures = []
        for i in range(20):
            def fn(conn, i=i):
                conn.execute("INSERT INTO items(name) VALUES (?)", (f"fn {i}",))
                try:
                    with conn.savepoint():
                        conn.execute("INSERT INTO items(name) VALUES (?)", (f"unit {i}",))
                        if i % 3 == 0:
                            raise RuntimeError("undo my unit")
                except RuntimeError:
                    pass
                if i % 5 == 0:
                    raise LookupError("undo my fn")
            futures.append(db.submit_transaction(fn))
        gate.set()
        for i, future in enumerate(futures):
            if i % 5 == 0:
                with pytest.raises(LookupError):
                    future.result(30)
            else:
                future.result(30)
        assert db.stats()["batch_max"] > 1
        got = {row[0] for row in db.execute("SELECT name FROM items").rows}
    want = {f"fn {i}" for i in range(20) if i % 5}
    want |= {f"unit {i}" for i in range(20) if i % 5 and i % 3}
    assert got == want
