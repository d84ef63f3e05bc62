"""transaction(fn): atomic, its value back, its failure leaves no trace."""

from __future__ import annotations

import apsw
import pytest

from sqlite_gateway.errors import GatewayError, NestedCallError


def test_fn_value_comes_back_and_its_writes_commit_together(gateway):
    def transfer(conn, name):
        conn.execute("INSERT INTO items(name) VALUES (?)", (name,))
        conn.executemany("INSERT INTO counters(id, n) VALUES (?, ?)", [(1, 10), (2, 20)])
        return conn.execute("SELECT sum(n) FROM counters").scalar()

    assert gateway.transaction(transfer, "t") == 30
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1


def test_a_fn_that_raises_leaves_no_trace(gateway):
    def half_done(conn):
        conn.execute("INSERT INTO items(name) VALUES ('ghost')")
        conn.execute("INSERT INTO counters(id, n) VALUES (1, 1)")
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        gateway.transaction(half_done)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0
    assert gateway.execute("SELECT count(*) FROM counters").scalar() == 0


def test_an_sql_error_inside_fn_rolls_back_the_fn_only(gateway):
    gateway.execute("INSERT INTO items(name) VALUES ('taken')")

    def clash(conn):
        conn.execute("INSERT INTO counters(id, n) VALUES (5, 5)")
        conn.execute("INSERT INTO items(name) VALUES ('taken')")

    with pytest.raises(apsw.ConstraintError):
        gateway.transaction(clash)
    assert gateway.execute("SELECT count(*) FROM counters").scalar() == 0
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1


def test_kwargs_reach_fn_and_timeout_is_taken_by_the_gateway(gateway):
    def fn(conn, a, *, b):
        return (a, b)

    assert gateway.transaction(fn, 1, b=2, timeout=5) == (1, 2)


def test_a_gateway_call_inside_fn_raises_instead_of_deadlocking(gateway):
    def nested(conn):
        gateway.execute("SELECT 1")

    with pytest.raises(NestedCallError, match="conn argument"):
        gateway.transaction(nested)
    # The gateway is still serving.
    assert gateway.execute("SELECT 2").scalar() == 2


def test_the_conn_handle_is_dead_after_fn_returns(gateway):
    kept = gateway.transaction(lambda conn: conn)
    with pytest.raises(GatewayError, match="only inside"):
        kept.execute("SELECT 1")


def test_transaction_control_inside_fn_is_refused(gateway):
    def sneaky(conn):
        conn.execute("INSERT INTO items(name) VALUES ('x')")
        conn.execute("COMMIT")

    with pytest.raises(GatewayError, match="transaction"):
        gateway.transaction(sneaky)
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_whole_transaction_rollback_fails_the_offender_and_reruns_the_others(gateway):
    """INSERT OR ROLLBACK undoes the whole batch: the others must still commit."""
    from conftest import WorkerBlocker

    gateway.execute("INSERT INTO items(name) VALUES ('dup')")
    blocker = WorkerBlocker(gateway)
    before = gateway.submit("INSERT INTO items(name) VALUES ('before')")
    offender = gateway.submit("INSERT OR ROLLBACK INTO items(name) VALUES ('dup')")
    after = gateway.submit("INSERT INTO items(name) VALUES ('after')")
    calls = []
    fn_future = gateway.submit_transaction(
        lambda conn: calls.append(1) or conn.execute("INSERT INTO counters VALUES (1, 1)"))
    blocker.done()
    assert before.result(10).rowcount == 1
    with pytest.raises(apsw.ConstraintError):
        offender.result(10)
    assert after.result(10).rowcount == 1
    assert fn_future.result(10).rowcount == 1
    names = {r[0] for r in gateway.execute("SELECT name FROM items")}
    assert names == {"dup", "before", "after"}
    assert gateway.execute("SELECT n FROM counters WHERE id=1").scalar() == 1
    assert len(calls) == 1  # it ran after the offender, so only once
    assert gateway.stats()["reruns"] == 1


def test_a_trigger_raise_rollback_does_not_take_the_batch_with_it(gateway):
    from conftest import WorkerBlocker

    gateway.execute("""CREATE TRIGGER no_evil BEFORE INSERT ON items WHEN NEW.name = 'evil'
                       BEGIN SELECT RAISE(ROLLBACK, 'evil is refused'); END""")
    blocker = WorkerBlocker(gateway)
    calls = []

    def first(conn):
        calls.append("first")
        conn.execute("INSERT INTO items(name) VALUES ('good')")

    ok = gateway.submit_transaction(first)
    bad = gateway.submit("INSERT INTO items(name) VALUES ('evil')")
    blocker.done()
    ok.result(10)
    with pytest.raises(apsw.ConstraintError, match="evil is refused"):
        bad.result(10)
    assert [r[0] for r in gateway.execute("SELECT name FROM items")] == ["good"]
    assert calls == ["first", "first"]  # documented: a fn may run twice
