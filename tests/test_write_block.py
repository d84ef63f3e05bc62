"""Write blocks (``with db.writer() as w:``): interactive transactions on the writer."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import apsw
import pytest
from conftest import child_python, read_only, scalar

from sqlite_gateway import (Gateway, GatewayClosed, GatewayError, NestedCallError,
                            RequestTimeout, State, WriteBlockExpired)

WIDE = 30  # seconds: a hang bound, far above what any step here takes


@pytest.fixture
def db(db_path):
    with Gateway(db_path, timeout=WIDE) as gateway:
        gateway.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        gateway.execute("CREATE TABLE counter(n INTEGER NOT NULL)")
        gateway.execute("INSERT INTO counter VALUES (0)")
        yield gateway


def names(db: Gateway) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM items ORDER BY id").rows]


def held_in_thread(db: Gateway, body, **writer):
    """Enter a block in a new thread and run ``body(w, release)`` there; returns
    (thread, held event, release event, outcome dict)."""
    held, release, outcome = threading.Event(), threading.Event(), {}

    def run():
        try:
            with db.writer(**writer) as w:
                held.set()
                outcome["value"] = body(w, release)
            outcome["exited"] = True
        except BaseException as exc:
            outcome["error"] = exc
            held.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(WIDE)
    return thread, release, outcome


def test_read_modify_write_in_blocks_from_four_threads_is_exact(db):
    def increment():
        for _ in range(10):
            with db.writer() as w:
                n = w.execute("SELECT n FROM counter").scalar()
                w.execute("UPDATE counter SET n = ?", (n + 1,))

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WIDE)
    assert db.execute("SELECT n FROM counter").scalar() == 40
    assert db.stats()["write_blocks"] == 40


def test_leaving_the_block_means_committed_and_reads_inside_see_its_writes(db, db_path):
    with db.writer() as w:
        w.execute("INSERT INTO items(name) VALUES ('a')")
        assert w.execute("SELECT name FROM items").rows == (("a",),)
        assert scalar(db_path, "SELECT count(*) FROM items") == 0  # not committed yet
    assert scalar(db_path, "SELECT count(*) FROM items") == 1  # an outside view, at once


def test_an_exception_rolls_the_block_back_and_goes_on_unchanged(db):
    error = LookupError("mine")
    with pytest.raises(LookupError) as caught:
        with db.writer() as w:
            w.execute("INSERT INTO items(name) VALUES ('undone')")
            raise error
    assert caught.value is error
    assert names(db) == []
    db.execute("INSERT INTO items(name) VALUES ('later')")
    assert names(db) == ["later"]


def test_an_sql_error_inside_the_block_can_be_caught_and_the_block_goes_on(db):
    with db.writer() as w:
        w.execute("INSERT INTO items(name) VALUES ('a')")
        with pytest.raises(apsw.ConstraintError):
            w.execute("INSERT INTO items(name) VALUES ('a')")
        w.executemany("INSERT INTO items(name) VALUES (?)", [("b",), ("c",)])
    assert names(db) == ["a", "b", "c"]


def test_savepoints_in_a_block_roll_back_alone(db):
    with db.writer() as w:
        w.execute("INSERT INTO items(name) VALUES ('kept')")
        with pytest.raises(ZeroDivisionError):
            with w.savepoint():
                w.execute("INSERT INTO items(name) VALUES ('undone')")
                with w.savepoint():
                    w.execute("INSERT INTO items(name) VALUES ('undone too')")
                raise ZeroDivisionError
        with w.savepoint() as unit:
            w.execute("INSERT INTO items(name) VALUES ('rolled back')")
            unit.rollback()
            w.execute("INSERT INTO items(name) VALUES ('kept too')")
    assert names(db) == ["kept", "kept too"]


def test_every_gateway_call_from_the_holding_thread_fails_at_once(db):
    calls = {
        "execute write": lambda: db.execute("INSERT INTO items(name) VALUES ('x')"),
        "executemany": lambda: db.executemany("INSERT INTO items(name) VALUES (?)", [("x",)]),
        "transaction": lambda: db.transaction(lambda conn: None),
        "submit": lambda: db.submit("INSERT INTO items(name) VALUES ('x')"),
        "submit_transaction": lambda: db.submit_transaction(lambda conn: None),
        "post": lambda: db.post("INSERT INTO items(name) VALUES ('x')"),
        "flush": lambda: db.flush(),
        "run_exclusive": lambda: db.run_exclusive(lambda conn: None),
        "bulk": lambda: db.bulk("INSERT INTO items(name) VALUES (?)", [("x",)]),
        "writer": lambda: db.writer().__enter__(),
        "close": lambda: db.close(),
    }
    with db.writer() as w:
        w.execute("INSERT INTO items(name) VALUES ('mine')")
        for what, call in calls.items():
            with pytest.raises(NestedCallError, match="holds a write block"):
                call()
                pytest.fail(f"{what} did not refuse")
        # A read goes to a reader, as any thread's: the last commit, not the block's row.
        assert db.execute("SELECT count(*) FROM items").scalar() == 0
    assert names(db) == ["mine"]
    assert db.state is State.RUNNING
    db.post("INSERT INTO items(name) VALUES ('after')")  # and the thread is free again
    db.flush()
    assert names(db) == ["mine", "after"]


def test_without_readers_a_read_from_the_holding_thread_fails_at_once(db_path):
    with Gateway(db_path, readers=0, timeout=WIDE) as db:
        with db.writer() as w:
            w.execute("CREATE TABLE t(x)")
            with pytest.raises(NestedCallError, match="holds a write block"):
                db.execute("SELECT 1")  # it would go to the writer: wait for itself


def test_other_threads_wait_for_a_held_block_then_run(db):
    thread, release, outcome = held_in_thread(
        db, lambda w, release: (w.execute("INSERT INTO items(name) VALUES ('block')"),
                                release.wait(WIDE)))
    future = db.submit("INSERT INTO items(name) VALUES ('after')")
    assert not future.done()
    release.set()
    thread.join(WIDE)
    future.result(WIDE)
    assert outcome.get("exited") and names(db) == ["block", "after"]


def test_the_hold_limit_rolls_the_block_back_and_tells_its_holder(db_path):
    with Gateway(db_path, hold_limit=0.3, timeout=WIDE) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        with pytest.raises(WriteBlockExpired) as caught:
            with db.writer() as w:
                w.execute("INSERT INTO items(name) VALUES ('too slow')")
                deadline = time.monotonic() + WIDE
                while w.held and time.monotonic() < deadline:
                    time.sleep(0.01)  # slow work with the writer held
                w.execute("INSERT INTO items(name) VALUES ('never')")
        assert caught.value.limit == 0.3
        # leaving without another statement raises it too
        with pytest.raises(WriteBlockExpired):
            with db.writer() as w:
                w.execute("INSERT INTO items(name) VALUES ('too slow')")
                while w.held and time.monotonic() < deadline:
                    time.sleep(0.01)
        assert db.execute("SELECT count(*) FROM items").scalar() == 0
        stats = db.stats()
        assert stats["write_blocks_expired"] == 2 and stats["state"] == "running"
        # an error of the body goes on unchanged past an expired block
        with pytest.raises(KeyError):
            with db.writer() as w:
                while w.held and time.monotonic() < deadline:
                    time.sleep(0.01)
                raise KeyError("mine")


def test_the_hold_limit_interrupts_a_runaway_statement_in_the_block(db_path):
    with Gateway(db_path, hold_limit=0.3, timeout=WIDE) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        with pytest.raises(WriteBlockExpired):
            with db.writer() as w:
                w.execute("INSERT INTO items(name) VALUES ('undone')")
                w.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                          "SELECT count(*) FROM c")  # never ends by itself
        assert db.execute("SELECT count(*) FROM items").scalar() == 0
        assert db.state is State.RUNNING


def test_a_watchdog_shorter_than_the_hold_limit_never_breaks_the_gateway(db_path):
    with Gateway(db_path, hold_limit=60, hang_timeout=0.6, busy_timeout=0.1,
                 timeout=WIDE) as db:
        with pytest.raises(WriteBlockExpired):
            with db.writer() as w:
                deadline = time.monotonic() + WIDE
                while w.held and time.monotonic() < deadline:
                    time.sleep(0.01)
        assert db.state is State.RUNNING
        assert db.execute("SELECT 1").scalar() == 1


def test_waiting_for_the_writer_past_the_timeout_runs_nothing(db):
    thread, release, _ = held_in_thread(db, lambda w, release: release.wait(WIDE))
    with pytest.raises(RequestTimeout) as caught:
        with db.writer(timeout=0.1) as w:
            w.execute("INSERT INTO items(name) VALUES ('never')")
    assert caught.value.started is False
    release.set()
    thread.join(WIDE)
    db.flush()
    assert names(db) == [] and db.stats()["write_blocks"] == 1


def test_misuse_of_the_handle_is_one_clear_error(db):
    block = db.writer()
    with pytest.raises(GatewayError, match="inside 'with db.writer"):
        block.execute("SELECT 1")
    with block as w:
        w.execute("INSERT INTO items(name) VALUES ('a')")
    with pytest.raises(GatewayError, match="has ended"):
        w.execute("INSERT INTO items(name) VALUES ('b')")
    with pytest.raises(GatewayError, match="entered once"):
        block.__enter__()
    assert names(db) == ["a"]


def test_two_threads_cannot_run_statements_on_one_block_at_once(db):
    started, errors = threading.Event(), []

    def body(w, release):
        def other():
            started.wait(WIDE)
            try:
                w.execute("SELECT 1")
            except GatewayError as exc:
                errors.append(exc)
            finally:
                release.set()

        helper = threading.Thread(target=other)
        helper.start()

        def slow_step(x):
            started.set()
            release.wait(WIDE)  # the helper tries its statement meanwhile
            return x
        db_conn_fn = slow_step
        w._handle._conn.create_scalar_function("slow_step", db_conn_fn, 1)
        w.execute("SELECT slow_step(1)")
        helper.join(WIDE)

    thread, _, outcome = held_in_thread(db, body)
    thread.join(WIDE)
    assert "error" not in outcome, outcome
    assert len(errors) == 1 and "one thread at a time" in str(errors[0])


def test_a_block_undone_by_another_request_of_its_batch_says_so(db_path):
    with Gateway(db_path, inline=False, timeout=WIDE) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        db.execute("INSERT INTO items(name) VALUES ('taken')")
        blocker_in, blocker_out = threading.Event(), threading.Event()
        first = db.submit_transaction(lambda conn: (blocker_in.set(), blocker_out.wait(WIDE)))
        assert blocker_in.wait(WIDE)
        outcome = {}

        def holder():
            try:
                with db.writer() as w:
                    w.execute("INSERT INTO items(name) VALUES ('block')")
                outcome["exited"] = True
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=holder)
        thread.start()
        deadline = time.monotonic() + WIDE
        while db.stats()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        spoiler = db.submit("INSERT OR ROLLBACK INTO items(name) VALUES ('taken')")
        blocker_out.set()  # the block and the spoiler now run in one batch
        first.result(WIDE)
        thread.join(WIDE)
        with pytest.raises(apsw.ConstraintError):
            spoiler.result(WIDE)
        error = outcome.get("error")
        assert isinstance(error, GatewayError) and "rolled back as a whole" in str(error)
        assert names(db) == ["taken"]


def test_close_while_a_block_is_held_is_bounded_by_the_hold_limit(db_path):
    db = Gateway(db_path, hold_limit=0.5, timeout=WIDE).start()
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    statements = []

    def body(w, release):
        w.execute("INSERT INTO items(name) VALUES ('held across close')")
        release.wait(WIDE)
        statements.append(w.held)
        w.execute("INSERT INTO items(name) VALUES ('too late')")

    thread, release, outcome = held_in_thread(db, body)
    closer = threading.Thread(target=db.close)
    closer.start()
    deadline = time.monotonic() + WIDE
    while db.state is not State.CLOSING and time.monotonic() < deadline:
        time.sleep(0.005)
    closer.join(WIDE)  # returns once the block's hold limit rolled it back
    assert not closer.is_alive() and db.state is State.CLOSED
    release.set()
    thread.join(WIDE)
    assert isinstance(outcome.get("error"), WriteBlockExpired)
    assert scalar(db_path, "SELECT count(*) FROM items") == 0


def test_a_block_ended_in_time_commits_before_close_returns(db_path):
    db = Gateway(db_path, timeout=WIDE).start()
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    thread, release, outcome = held_in_thread(
        db, lambda w, release: (release.wait(WIDE),
                                w.execute("INSERT INTO items(name) VALUES ('kept')")))
    closer = threading.Thread(target=db.close)
    closer.start()
    deadline = time.monotonic() + WIDE
    while db.state is not State.CLOSING and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(GatewayClosed):
        db.execute("INSERT INTO items(name) VALUES ('refused')")
    release.set()
    thread.join(WIDE)
    closer.join(WIDE)
    assert outcome.get("exited") and db.state is State.CLOSED
    assert scalar(db_path, "SELECT count(*) FROM items") == 1


def test_blocks_of_two_threads_and_fn_requests_share_commits(db_path):
    with Gateway(db_path, timeout=WIDE) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        before = db.stats()
        rounds, stop = 30, threading.Event()
        errors: list[BaseException] = []

        def blocks(tag):
            try:
                for i in range(rounds):
                    with db.writer() as w:
                        w.execute("INSERT INTO items(name) VALUES (?)", (f"{tag} {i}",))
                        n = w.execute("SELECT count(*) FROM items WHERE name = ?",
                                      (f"{tag} {i}",)).scalar()
                        assert n == 1
            except BaseException as exc:
                errors.append(exc)

        def fns(tag):
            try:
                for i in range(rounds * 3):
                    if stop.is_set():
                        return
                    db.transaction(lambda conn, i=i: conn.execute(
                        "INSERT INTO items(name) VALUES (?)", (f"{tag} {i}",)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=blocks, args=(f"block{k}",)) for k in range(2)]
        threads += [threading.Thread(target=fns, args=(f"fn{k}",)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WIDE * 2)
        assert not errors, errors
        after = db.stats()
        requests = after["requests"] - before["requests"]
        commits = after["commits"] - before["commits"]
        assert db.execute("SELECT count(*) FROM items").scalar() == 2 * rounds + 6 * rounds * 3
        assert after["write_blocks"] == 2 * rounds
        assert commits < requests, (commits, requests)  # group commit still happens
        assert after["batch_max"] > 1


def test_interactive_requests_go_before_background_work_while_a_block_is_held(db_path):
    with Gateway(db_path, inline=False, timeout=WIDE) as db:
        db.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, tag TEXT)")
        thread, release, _ = held_in_thread(db, lambda w, release: release.wait(WIDE))
        background = [db.submit("INSERT INTO log(tag) VALUES ('background')",
                                priority="background") for _ in range(5)]
        late_block = {}

        def background_block():
            with db.writer(priority="background") as w:
                w.execute("INSERT INTO log(tag) VALUES ('background block')")
            late_block["done"] = True

        other = threading.Thread(target=background_block)
        other.start()
        deadline = time.monotonic() + WIDE
        while db.stats()["queued"] < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        interactive = [db.submit("INSERT INTO log(tag) VALUES ('interactive')")
                       for _ in range(5)]
        release.set()
        for future in background + interactive:
            future.result(WIDE)
        thread.join(WIDE)
        other.join(WIDE)
        tags = [row[0] for row in db.execute("SELECT tag FROM log ORDER BY id").rows]
    assert late_block.get("done")
    assert tags[:5] == ["interactive"] * 5
    assert sorted(tags[5:]) == sorted(["background"] * 5 + ["background block"])


def test_stats_and_metrics_count_blocks_and_their_hold_time(db):
    prometheus = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from sqlite_gateway.metrics import GatewayCollector

    for _ in range(3):
        with db.writer() as w:
            w.execute("SELECT 1")
    stats = db.stats()
    assert stats["write_blocks"] == 3 and stats["write_blocks_expired"] == 0
    assert 0 < stats["write_block_hold_s"] and 0 < stats["write_block_hold_max_ms"]
    registry = prometheus.CollectorRegistry()
    registry.register(GatewayCollector(db))
    samples = {s.name: s.value for family in text_string_to_metric_families(
        prometheus.generate_latest(registry).decode()) for s in family.samples}
    assert samples["sqlite_gateway_write_blocks_total"] == 3
    assert samples["sqlite_gateway_write_block_hold_seconds_total"] == pytest.approx(
        db.stats()["write_block_hold_s"])
    assert "sqlite_gateway_write_block_hold_max_seconds" in samples


def test_a_block_cannot_be_entered_inside_a_transaction_fn(db):
    with pytest.raises(NestedCallError):
        db.transaction(lambda conn: db.writer().__enter__())


def test_bad_writer_arguments_are_refused_at_the_call(db):
    with pytest.raises(ValueError, match="priority"):
        db.writer(priority="urgent")
    with pytest.raises(ValueError, match="timeout"):
        db.writer(timeout=-1)
    with pytest.raises(ValueError, match="hold_limit"):
        Gateway("x.db", hold_limit=0)


KILLED_IN_A_BLOCK = r"""
import os, sys, threading
from sqlite_gateway import Gateway

path, log_path = sys.argv[1], sys.argv[2]
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
db = Gateway(path, hold_limit=600, hang_timeout=None).start()
db.execute("CREATE TABLE IF NOT EXISTS acked(id INTEGER PRIMARY KEY, total INTEGER)")
db.execute("CREATE TABLE IF NOT EXISTS marker(what TEXT)")
lock = threading.Lock()
count = [0]

def work(k):
    for n in range(100_000):  # bounded; the parent kills us long before
        i = k * 100_000 + n
        with db.writer() as w:
            total = w.execute("SELECT count(*) FROM acked").scalar()
            w.execute("INSERT INTO acked VALUES (?, ?)", (i, total))
        os.write(log, b"%d\n" % i)  # only after the block's COMMIT
        with lock:
            count[0] += 1
            if count[0] == 300:
                break
    else:
        return
    with db.writer() as w:
        w.execute("INSERT INTO marker VALUES ('unacknowledged block')")
        print("holding", flush=True)
        threading.Event().wait()

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_kill_9_during_a_block_keeps_every_acknowledged_block_and_nothing_of_the_open_one(
        tmp_path):
    db_path, log_path = str(tmp_path / "app.db"), str(tmp_path / "acked.log")
    with child_python(KILLED_IN_A_BLOCK, db_path, log_path, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE) as child:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the child holds the block
        assert line.strip() == "holding", child.stderr.read() if child.stderr else line
        child.send_signal(signal.SIGKILL)
        child.wait(WIDE)
    with open(log_path) as f:
        acked = {int(x) for x in f.read().split("\n")[:-1]}
    assert len(acked) >= 300
    conn = read_only(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        present = {row[0] for row in conn.execute("SELECT id FROM acked")}
        assert acked <= present, "acknowledged blocks were lost"
        totals = sorted(row[0] for row in conn.execute("SELECT total FROM acked"))
        assert totals == list(range(len(present))), "a read-modify-write was not exact"
        assert conn.execute("SELECT count(*) FROM marker").fetchall()[0][0] == 0
    finally:
        conn.close()
    assert os.path.exists(db_path)


def test_the_write_block_benchmark_prints_both_figures_and_the_ratio():
    import sys

    from conftest import ROOT
    out = subprocess.run([sys.executable, "-m", "benchmarks.writeblock", "--n", "200",
                          "--calls", "20", "--rounds", "1"], capture_output=True, cwd=ROOT,
                         text=True, timeout=120, check=True).stdout
    assert "load average" in out and "block / fn" in out
    assert "one statement" in out and "read-modify-write" in out


def test_a_block_on_a_gateway_not_started_or_closed_is_refused_at_once(db_path):
    db = Gateway(db_path)
    with pytest.raises(GatewayError, match="not started"):
        with db.writer():
            pass
    db.start()
    db.close()
    with pytest.raises(GatewayClosed):
        with db.writer():
            pass
