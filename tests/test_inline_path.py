"""A call runs in its caller's thread when the writer is idle, with every guarantee kept."""

from __future__ import annotations

import threading
import time

import apsw
import pytest
from conftest import WorkerBlocker, in_thread, wait_until

from sqlite_gateway import Gateway, GatewayError, RequestTimeout
from sqlite_gateway.errors import NestedCallError

BOUND_S = 10  # a bound that detects a hang, not a timing goal
ENDLESS_WRITE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                 "INSERT INTO items(name) SELECT 'endless' || x FROM c")


def test_an_idle_writer_runs_the_call_in_the_callers_thread(gateway):
    def where(conn):
        conn.execute("INSERT INTO items(name) VALUES ('here')")
        return threading.get_ident()

    caller, ran = in_thread(lambda: (threading.get_ident(), gateway.transaction(where)))
    assert ran == caller
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 1
    assert gateway.stats()["commits"] >= 1


def test_the_main_thread_never_runs_the_writer_in_place(gateway):
    ran = gateway.transaction(lambda conn: threading.get_ident())
    assert ran != threading.get_ident()  # Ctrl-C lands in the main thread: not in a COMMIT


def test_inline_off_sends_every_call_through_the_worker(db_path):
    with Gateway(db_path, inline=False) as db:
        caller, ran = in_thread(lambda: (threading.get_ident(),
                                         db.transaction(lambda conn: threading.get_ident())))
        assert ran != caller


def test_a_call_in_place_never_overtakes_work_accepted_before_it(gateway):
    blocker = WorkerBlocker(gateway)
    earlier = gateway.submit("INSERT INTO items(name) VALUES ('earlier')")
    seen = []

    def later():
        seen.append(gateway.execute("SELECT count(*) FROM items WHERE name = 'earlier'",
                                    ).scalar())
        return gateway.transaction(
            lambda conn: conn.execute("SELECT count(*) FROM items").rows[0][0])

    worker = threading.Thread(target=lambda: seen.append(later()))
    worker.start()
    # The read ran, and the transaction either waits in the queue behind 'earlier'
    # (right) or already ran in place, overtaking it (wrong: seen[-1] == 0 below).
    wait_until(lambda: len(seen) == 2 or (seen and gateway.stats()["queued"] >= 2),
               "the transaction to queue behind the earlier write (or overtake it)")
    assert not earlier.done()
    blocker.done()
    worker.join(BOUND_S)
    assert earlier.result(BOUND_S).rowcount == 1
    assert seen[-1] == 1  # the transaction ran after the earlier submit, not before it


def test_a_gateway_call_inside_a_fn_run_in_place_is_refused(gateway):
    def nested(conn):
        gateway.execute("INSERT INTO items(name) VALUES ('nested')")

    with pytest.raises(NestedCallError):
        in_thread(lambda: gateway.transaction(nested))
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_a_statement_run_in_place_stops_at_its_callers_deadline(gateway):
    start = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        in_thread(lambda: gateway.execute(ENDLESS_WRITE, timeout=0.3))
    assert time.monotonic() - start < BOUND_S
    assert info.value.started and info.value.interrupted
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0  # nothing committed
    assert in_thread(lambda: gateway.execute("INSERT INTO items(name) VALUES ('after')")
                     ).rowcount == 1


def test_a_failed_fn_run_in_place_keeps_nothing(gateway):
    def half(conn):
        conn.execute("INSERT INTO items(name) VALUES ('half')")
        raise KeyError("no")

    with pytest.raises(KeyError):
        in_thread(lambda: gateway.transaction(half))
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


def test_writes_after_a_whole_transaction_rollback_are_refused_not_committed(gateway):
    gateway.execute("INSERT INTO items(id, name) VALUES (1, 'taken')")

    def go_on(conn):
        try:
            conn.execute("INSERT OR ROLLBACK INTO items(id, name) VALUES (1, 'again')")
        except apsw.ConstraintError:
            pass
        conn.execute("INSERT INTO items(name) VALUES ('after the rollback')")

    for call in (lambda: gateway.transaction(go_on),
                 lambda: in_thread(lambda: gateway.transaction(go_on))):
        with pytest.raises(GatewayError, match="rolled back as a whole"):
            call()
    assert gateway.execute("SELECT group_concat(name) FROM items").scalar() == "taken"


def test_a_done_callback_that_raises_base_exceptions_does_not_hurt_the_worker(gateway):
    for exc in (SystemExit(3), KeyboardInterrupt(), ValueError("cb")):
        future = gateway.submit("INSERT INTO items(name) VALUES (?)", (repr(exc),))

        def callback(_f, exc=exc):
            raise exc

        future.add_done_callback(callback)
        future.result(BOUND_S)
    assert gateway.execute("INSERT INTO items(name) VALUES ('still serving')").rowcount == 1
    assert gateway.state.value == "running"
