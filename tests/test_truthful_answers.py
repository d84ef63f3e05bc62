"""Every answer of the write path tells the truth: what a caller hears is what the file holds.

Each test drives one way an answer could lie (a late fn after a give-up, a
deadline that fires during COMMIT, a timeout too large to wait on, a
parameter changed after the call...) and checks the answer against the file.
"""

from __future__ import annotations

import array
import mmap
import os
import threading
import time
import tracemalloc

import apsw
import pytest
from conftest import WorkerBlocker, child_python, in_thread, run_python, scalar

from sqlite_gateway import (Gateway, GatewayClosed, GatewayError, Overloaded, RequestTimeout,
                            State)
from sqlite_gateway.errors import NestedCallError

BOUND_S = 10  # a bound that detects a hang, not a timing goal
ENDLESS_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) FROM c")


def wait_for_state(db, state, bound=BOUND_S):
    deadline = time.monotonic() + bound
    while db.state is not state:
        assert time.monotonic() < deadline, f"gateway never became {state}"
        threading.Event().wait(0.01)


# -- a fn the watchdog gave up ---------------------------------------------------

@pytest.mark.parametrize("in_place", [True, False], ids=["in_place", "on_the_worker"])
def test_a_fn_given_up_by_the_watchdog_is_answered_closed_when_it_returns_late(
        db_path, in_place):
    db = Gateway(db_path, busy_timeout=0.05, hang_timeout=0.3).start()
    try:
        db.execute("CREATE TABLE t(x)")
        caller = []

        def late(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            caller.append(threading.get_ident())
            wait_for_state(db, State.BROKEN)
            return "committed?"

        def call():
            with pytest.raises(GatewayClosed) as info:
                db.transaction(late, timeout=None)
            return info.value, threading.get_ident()

        error, ident = in_thread(call) if in_place else call()
        assert (caller[0] == ident) is in_place
        assert "not committed" in str(error)
    finally:
        db.close(timeout=5)
    assert scalar(db_path, "SELECT count(*) FROM t") == 0


# -- a deadline must not reach the COMMIT -------------------------------------------

def test_a_write_answered_timed_out_in_place_was_never_committed(db_path):
    # SQLite calls the progress handler during COMMIT too (about every 333rd run
    # of the cached COMMIT): a deadline still armed there stopped committed writes.
    with Gateway(db_path, synchronous="NORMAL") as db:
        db.execute("CREATE TABLE t(x PRIMARY KEY)")

        def spin_past(conn, x, until):
            conn.execute("INSERT INTO t VALUES (?)", (x,))
            while time.monotonic() < until:
                pass  # Python only: no SQL runs past the deadline before COMMIT
            return x

        def run():
            told = {}
            for x in range(1200):
                try:
                    told[x] = db.transaction(spin_past, x, time.monotonic() + 0.002,
                                             timeout=0.001) == x
                except RequestTimeout as exc:
                    told[x] = False
                    assert exc.started
            return told

        told = in_thread(run)
        committed = {row[0] for row in db.execute("SELECT x FROM t")}
        lies = [x for x, said in told.items() if said != (x in committed)]
        assert not lies, f"{len(lies)} answers disagree with the file, e.g. {lies[:5]}"
        # Most commit (a loaded machine may stop a few early, truthfully): enough
        # COMMITs for SQLite to have consulted the progress handler in some.
        assert sum(told.values()) >= len(told) // 2


# -- timeouts too large to wait on --------------------------------------------------

def test_a_timeout_beyond_what_a_lock_can_wait_is_refused_before_anything_runs(gateway,
                                                                              db_path):
    too_long = threading.TIMEOUT_MAX * 2
    for call in (lambda: gateway.execute("INSERT INTO items(name) VALUES ('a')",
                                         timeout=too_long),
                 lambda: gateway.transaction(
                     lambda conn: conn.execute("INSERT INTO items(name) VALUES ('b')"),
                     timeout=too_long),
                 lambda: gateway.submit("INSERT INTO items(name) VALUES ('c')",
                                        priority="background", block=True, timeout=too_long),
                 lambda: gateway.post("INSERT INTO items(name) VALUES ('d')",
                                      priority="background", block=True, timeout=too_long),
                 lambda: gateway.flush(timeout=too_long)):
        with pytest.raises(ValueError, match="TIMEOUT_MAX|None for no limit"):
            in_thread(call)
    gateway.flush()
    assert scalar(db_path, "SELECT count(*) FROM items") == 0
    with pytest.raises(ValueError, match="timeout"):
        Gateway(db_path, timeout=too_long)
    with pytest.raises(ValueError, match="busy_timeout"):
        Gateway(db_path, busy_timeout=too_long)


# -- parameters are captured at the call -------------------------------------------

def test_buffers_passed_to_write_behind_calls_are_copied_at_the_call(gateway, db_path):
    gateway.execute("CREATE TABLE blobs(k TEXT, v BLOB)")
    numbers = array.array("b", [1, 2, 3])
    mapped = mmap.mmap(-1, 3)
    mapped.write(b"abc")
    blocker = WorkerBlocker(gateway)
    try:
        gateway.post("INSERT INTO blobs VALUES ('array', ?)", (numbers,))
        future = gateway.submit("INSERT INTO blobs VALUES ('mmap', ?)", [mapped])
        numbers[0] = 99
        mapped[0:3] = b"xyz"
    finally:
        blocker.done()
    future.result(BOUND_S)
    gateway.flush()
    mapped.close()
    rows = dict(gateway.execute("SELECT k, v FROM blobs").rows)
    assert rows == {"array": bytes([1, 2, 3]), "mmap": b"abc"}


# -- calls from inside a transaction fn ------------------------------------------------

def test_post_from_inside_a_transaction_fn_is_refused_like_every_other_call(gateway, db_path):
    def fn(conn):
        gateway.post("INSERT INTO items(name) VALUES ('posted')")

    for call in (lambda: gateway.transaction(fn), lambda: in_thread(
            lambda: gateway.transaction(fn))):
        with pytest.raises(NestedCallError, match="post"):
            call()
    gateway.flush()
    assert scalar(db_path, "SELECT count(*) FROM items") == 0


# -- a call's timeout bounds its wait for another process's lock ----------------------

HOLD_LOCK = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_a_calls_timeout_bounds_its_wait_for_another_process_lock(db_path):
    with Gateway(db_path, busy_timeout=30, hang_timeout=60) as db:
        db.execute("CREATE TABLE t(x)")
        import subprocess
        with child_python(HOLD_LOCK, db_path, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as child:
            assert child.stdout.readline().strip() == "locked"
            try:
                started = time.monotonic()
                with pytest.raises(RequestTimeout) as info:
                    in_thread(lambda: db.execute("INSERT INTO t VALUES (1)", timeout=0.3))
                waited = time.monotonic() - started
                assert not info.value.started  # it never began: nothing to commit
                assert waited < BOUND_S  # not the 30 s busy timeout
            finally:
                child.stdin.write("\n")
                child.stdin.flush()
        db.execute("INSERT INTO t VALUES (2)", timeout=BOUND_S)
        assert db.execute("SELECT x FROM t").rows == ((2,),)


# -- what the gateway arms on its writer stays armed --------------------------------

def test_an_exclusive_fn_that_clears_the_progress_handler_leaves_deadlines_working(db_path):
    with Gateway(db_path, hang_timeout=30) as db:
        db.execute("CREATE TABLE t(x)")
        db.run_exclusive(lambda conn: conn.set_progress_handler(None))
        endless = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                   "INSERT INTO t SELECT x FROM c")
        started = time.monotonic()
        with pytest.raises(RequestTimeout) as info:
            in_thread(lambda: db.execute(endless, timeout=0.3))
        assert info.value.interrupted
        assert time.monotonic() - started < BOUND_S  # not the 30 s hang_timeout
        assert db.execute("SELECT count(*) FROM t").scalar() == 0


def test_an_exclusive_fn_cannot_leave_hooks_that_change_later_calls(db_path):
    with Gateway(db_path, readers=0) as db:
        db.execute("CREATE TABLE t(x)")

        def meddle(conn):
            conn.authorizer = None  # the guard that refuses transaction control
            conn.execute("BEGIN")  # now prepared, and in apsw's statement cache
            conn.execute("ROLLBACK")
            conn.row_trace = lambda cursor, row: ("rewritten",)

        db.run_exclusive(meddle)
        db.execute("INSERT INTO t VALUES (1)")
        assert db.execute("SELECT x FROM t").rows == ((1,),)
        with pytest.raises(GatewayError, match="transaction"):
            db.execute("BEGIN")


# -- fork -------------------------------------------------------------------------

FORK_FROM_A_THREAD = """
import os, sys, threading
from sqlite_gateway import Gateway

def child():
    pid = os.fork()
    if pid == 0:  # the child: the forking thread is its main thread now
        try:
            with Gateway(sys.argv[1]) as db:
                ran = db.transaction(lambda conn: threading.get_ident())
            os._exit(3 if ran == threading.get_ident() else 0)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))

thread = threading.Thread(target=child)
thread.start()
thread.join()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_from_a_thread_never_runs_writes_in_place_on_its_main_thread(db_path):
    done = run_python("import warnings; warnings.simplefilter('ignore')\n" + FORK_FROM_A_THREAD,
                      db_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", "the child's main thread ran the writer in place"


# -- one deadline per call -------------------------------------------------------------

def test_a_new_write_text_waits_one_timeout_in_all_not_one_per_connection(db_path):
    with Gateway(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(x)")
        readers = db.core.readers
        slow_read = readers.read

        def read_that_turns_out_a_write(sql, params, timeout, *args, **kwargs):
            # A reader that took almost the whole timeout to free up, then SQLite
            # judged the text a write.
            threading.Event().wait(timeout * 0.9)
            return slow_read(sql, params, timeout, *args, **kwargs)

        readers.read = read_that_turns_out_a_write
        blocker = WorkerBlocker(db)
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                db.execute("INSERT INTO t VALUES (1)", timeout=2.0)
            waited = time.monotonic() - started
        finally:
            readers.read = slow_read
            blocker.done()
        assert waited < 2.0 * 1.6, f"waited {waited:.1f} s for a 2 s timeout"
        db.flush()
        assert db.execute("SELECT count(*) FROM t").scalar() == 0


# -- memory kept for SQL texts ----------------------------------------------------------

def test_long_distinct_sql_texts_do_not_pile_up_in_memory(db_path):
    with Gateway(db_path, readers=2) as db:
        db.execute("CREATE TABLE t(x)")
        pad = "x" * 100_000
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(150):
                db.execute(f"SELECT {i} /* {pad} */")
                db.execute(f"INSERT INTO t VALUES ({i}) /* {pad} */")
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # 300 texts of 100 KB: 30 MB if every memo kept them all.
        assert kept < 12_000_000, f"{kept / 1e6:.1f} MB kept"


# -- routing, results, barriers --------------------------------------------------------

def test_pragma_optimize_runs_on_the_writer_when_readers_are_on(db_path):
    with Gateway(db_path, readers=2) as db:
        db.execute("CREATE TABLE t(x, y)")
        db.execute("CREATE INDEX tx ON t(x)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(i % 3, i) for i in range(100)])
        for _ in range(2):  # the first time, and once its route is known
            # A query that used the index on a reader: optimize there wants to ANALYZE.
            assert db.execute("SELECT y FROM t WHERE x = 1 AND y > 3").rows
            db.execute("PRAGMA optimize")
        assert db.execute("SELECT count(*) FROM sqlite_stat1").scalar() >= 1


@pytest.mark.parametrize("readers", [0, 2])
def test_a_multi_statement_read_keeps_the_columns_of_the_rows_it_returns(db_path, readers):
    with Gateway(db_path, readers=readers) as db:
        for _ in range(2):  # the first run, and once the text is known
            result = db.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
            assert result.columns == ("b", "c")
            assert result.rows == ((2, 3),)
            assert result.dicts() == [{"b": 2, "c": 3}]
            same = db.execute("SELECT 1 AS a; SELECT 2 AS a")
            assert same.columns == ("a",)
            assert same.rows == ((2,),)


def test_flush_is_admitted_when_the_queue_is_full(db_path):
    with Gateway(db_path, queue_size=3) as db:
        db.execute("CREATE TABLE t(x)")
        blocker = WorkerBlocker(db)
        try:
            for x in range(3):
                db.post("INSERT INTO t VALUES (?)", (x,))
            with pytest.raises(Overloaded):
                db.post("INSERT INTO t VALUES (99)")
            flushed = threading.Thread(target=db.flush)
            flushed.start()
            deadline = time.monotonic() + BOUND_S
            while db.stats()["queued"] < 4:  # the barrier is in, behind the posts
                assert flushed.is_alive(), "flush() returned before the posts ran"
                assert time.monotonic() < deadline
                threading.Event().wait(0.01)
        finally:
            blocker.done()
        flushed.join(BOUND_S)
        assert not flushed.is_alive()
        assert db.execute("SELECT count(*) FROM t").scalar() == 3


# -- errors that teach ----------------------------------------------------------------

def test_a_missing_named_parameter_is_named_in_the_error(gateway):
    for call in (lambda: gateway.execute("INSERT INTO items(name) VALUES (:name)",
                                         {"nmae": "x"}),
                 lambda: in_thread(lambda: gateway.execute(
                     "INSERT INTO items(name) VALUES (:name)", {"nmae": "x"})),
                 lambda: gateway.execute("SELECT :name", {"nmae": "x"}),
                 lambda: gateway.transaction(lambda conn: conn.execute(
                     "SELECT :name", {"nmae": "x"}))):
        with pytest.raises(KeyError) as info:
            call()
        message = str(info.value)
        assert "name" in message and "nmae" in message and "parameter" in message
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 0


# -- what "interrupted" promises ---------------------------------------------------------

def _running_request(answer):
    from sqlite_gateway.request import Answer, Kind, Request
    request = (Request.waiting if answer is Answer.WAIT else Request.submitted)(
        Kind.EXECUTE, "INSERT INTO t VALUES (1)", ())
    assert request.claim()  # the worker has started it
    return request


@pytest.mark.parametrize("answer", ["wait", "future"])
def test_an_interrupt_that_missed_is_not_reported_as_one(answer):
    # Connection.interrupt() can miss (a statement just finishing; the next
    # statement of a script starts after SQLite cleared the flag): the
    # request then commits, and its caller must not hear "interrupted".
    from sqlite_gateway.request import Answer, wait_for
    request = _running_request(Answer(answer))

    def interrupt_that_missed(req):
        threading.Timer(0.05, req.set_result, ("committed",)).start()
        return True

    assert wait_for(request, 0.01, interrupt_that_missed) == "committed"


@pytest.mark.parametrize("answer", ["wait", "future"])
def test_an_interrupt_that_hit_is_reported_and_nothing_committed(answer):
    from sqlite_gateway.request import Answer, wait_for
    request = _running_request(Answer(answer))

    def interrupt_that_hit(req):
        req.set_exception(apsw.InterruptError("interrupted"))
        return True

    with pytest.raises(RequestTimeout) as info:
        wait_for(request, 0.01, interrupt_that_hit)
    assert info.value.started and info.value.interrupted
    assert "nothing of it was committed" in str(info.value)


def test_an_interrupt_whose_answer_is_late_says_it_may_still_commit():
    from sqlite_gateway.request import Answer, wait_for
    request = _running_request(Answer.WAIT)
    with pytest.raises(RequestTimeout) as info:
        wait_for(request, 0.01, lambda req: True)  # interrupted, but no answer in time
    assert info.value.started and not info.value.interrupted


# -- an I/O error in COMMIT ------------------------------------------------------------

def test_an_io_error_in_commit_says_each_caller_may_be_committed(db_path):
    import uuid

    from benchmarks.vfs.fault import FaultVFS
    vfs = FaultVFS(f"faulty-{uuid.uuid4().hex[:8]}")
    try:
        with Gateway(db_path, vfs=vfs.name, synchronous="FULL") as db:
            db.execute("CREATE TABLE t(x)")
            blocker = WorkerBlocker(db)
            try:
                futures = [db.submit("INSERT INTO t VALUES (?)", (x,)) for x in (1, 2)]
                vfs.faults.arm(syncs=1, only="-wal")  # the COMMIT's sync of the WAL
            finally:
                blocker.done()
            errors = [future.exception(BOUND_S) for future in futures]
            vfs.faults.off()
            assert all(isinstance(error, apsw.IOError) for error in errors)
            assert errors[0] is not errors[1]  # one object per caller: notes stay apart
            for error in errors:
                notes = getattr(error, "__notes__", [])
                assert len(notes) == 1 and "may be committed" in notes[0], notes
            db.execute("INSERT INTO t VALUES (3)")  # and it serves on
    finally:
        vfs.unregister()


def test_a_cancellation_that_interrupted_a_running_statement_says_it_may_still_commit():
    """An interrupt that lands as the statement finishes stops nothing (the history
    checker found cancelled-and-interrupted writes in the file), and a cancelled task
    cannot wait for the outcome: its note must say "may still commit", not "will not"."""
    from sqlite_gateway.request import Kind, Request

    request = Request.submitted(Kind.EXECUTE, "INSERT INTO t VALUES (1)", ())
    assert request.claim()  # the worker started it
    note = request.cancel_note(lambda r: True)  # and the interrupt was sent
    assert "interrupted" in note and "may still commit" in note
    assert "not commit" not in note
