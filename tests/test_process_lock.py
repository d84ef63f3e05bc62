"""The writers of one file in several processes queue on a kernel lock (process_lock).

A writer holds an exclusive flock on ``<db>-gateway.lock`` across each batch;
another gateway's writer waits for it in the kernel, not in SQLite's busy
handler, and a process that dies holding it never leaves the others waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import HANG_S, ROOT, run_python, wait_until

from sqlite_gateway import Gateway
from sqlite_gateway.processlock import SUFFIX

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def test_a_second_gateways_writer_waits_on_the_kernel_lock_not_in_the_busy_handler(db_path):
    with Gateway(db_path, process_lock=True) as a, Gateway(db_path, process_lock=True,
                                                          busy_timeout=HANG_S) as b:
        a.execute("CREATE TABLE t(x)")
        inside, release = threading.Event(), threading.Event()

        def hold(conn):
            conn.execute("INSERT INTO t VALUES ('a')")
            inside.set()
            assert release.wait(HANG_S)

        held = a.submit_transaction(hold)
        assert inside.wait(HANG_S)
        waiting = b.submit("INSERT INTO t VALUES ('b')")
        lock = b._worker.process_lock
        wait_until(lambda: lock.waits >= 1, "b's writer waiting on the gateway lock")
        assert b._worker.link._busy_since == 0.0  # SQLite's busy handler never ran
        release.set()
        held.result(HANG_S)
        waiting.result(HANG_S)
        assert sorted(r[0] for r in a.execute("SELECT x FROM t")) == ["a", "b"]
    assert os.path.exists(db_path + SUFFIX)


_HOLDER = """
import sys, time
from sqlite_gateway import Gateway
db = Gateway(sys.argv[1], process_lock=True).start()
db.execute("CREATE TABLE IF NOT EXISTS t(x)")

def hold(conn):
    conn.execute("INSERT INTO t VALUES ('never committed')")
    print("holding", flush=True)
    time.sleep(3600)

db.transaction(hold, timeout=None)
"""


def test_a_lock_holder_killed_with_sigkill_never_leaves_the_others_waiting(db_path):
    with Gateway(db_path) as db:
        db.execute("CREATE TABLE t(x)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen([sys.executable, "-c", _HOLDER, db_path], env=env, text=True,
                          stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "holding"
            # The holder keeps the gateway lock (and SQLite's) for an hour; if a dead
            # holder's lock outlived it, this write would time out after HANG_S.
            with Gateway(db_path, process_lock=True, busy_timeout=HANG_S,
                         timeout=HANG_S) as db:
                answer: list[object] = []
                writer = threading.Thread(
                    target=lambda: answer.append(db.execute("INSERT INTO t VALUES ('after')")))
                writer.start()
                wait_until(lambda: db._worker.process_lock.waits >= 1
                           or db._worker.process_lock is None, "the writer waiting")
                holder.send_signal(signal.SIGKILL)
                holder.wait(HANG_S)
                writer.join(HANG_S)
                assert answer, "the write did not complete after the holder died"
                assert [r[0] for r in db.execute("SELECT x FROM t")] == ["after"]
        finally:
            if holder.poll() is None:
                holder.kill()


def test_a_forked_child_closes_its_inherited_lock_descriptor(db_path):
    code = f"""
import os
from sqlite_gateway import Gateway
db = Gateway({db_path!r}, process_lock=True).start()
db.execute("CREATE TABLE t(x)")
lock = db._worker.process_lock
assert lock is not None and lock._fd >= 0
pid = os.fork()
if pid == 0:
    os._exit(0 if lock._fd == -1 else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), lock._fd >= 0)
db.close()
"""
    child = run_python(code)
    assert child.stdout.strip() == "0 True", child.stderr


def test_process_lock_takes_true_or_false(db_path):
    with pytest.raises(ValueError, match="^process_lock"):
        Gateway(db_path, process_lock="yes")
    with Gateway(db_path, process_lock=False) as db:
        db.execute("CREATE TABLE t(x)")
        assert db._worker.process_lock is None


# -- the lock's own hand-over ------------------------------------------------------------

def _other_holder(db_path):
    """An open file description of the lock file: flock treats it as another writer
    (flock locks belong to the open file description, not to the process)."""
    import fcntl
    fd = os.open(db_path + SUFFIX, os.O_RDWR | os.O_CREAT)
    return fd, fcntl


def _free(db_path) -> bool:
    """True if another writer could take the lock now (taken and let go at once)."""
    fd, fcntl = _other_holder(db_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # (closing the description drops its lock)
    return True


def test_the_lock_is_let_go_at_commit_before_the_batch_is_answered(db_path):
    # Answering wakes every caller of the batch: another process's writer must not
    # wait for that, only for the COMMIT.
    seen: list[bool] = []
    with Gateway(db_path, process_lock=True) as db:
        db.execute("CREATE TABLE t(x)")
        future = db.submit("INSERT INTO t VALUES (1)")
        future.add_done_callback(lambda f: seen.append(_free(db_path)))  # runs on the worker
        future.result(HANG_S)
        wait_until(lambda: seen, "the done-callback")
        assert seen == [True]
        assert db.execute("SELECT x FROM t").rows == ((1,),)


def test_queued_calls_commit_in_one_batch_when_another_writer_lets_go(db_path):
    # Each process keeps its own group commit: what queues while another process's
    # writer holds the file goes out in one transaction, one fsync.
    with Gateway(db_path, process_lock=True, inline=False) as db:
        db.execute("CREATE TABLE t(x)")
        fd, fcntl = _other_holder(db_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            commits = db.stats()["commits"]
            futures = [db.submit("INSERT INTO t VALUES (?)", (i,)) for i in range(20)]
            lock = db._worker.process_lock
            wait_until(lambda: lock.waits >= 1, "the writer waiting for the other one")
            assert not any(f.done() for f in futures)
        finally:
            os.close(fd)  # the other writer lets go
        assert [f.result(HANG_S).rowcount for f in futures] == [1] * 20
        assert db.stats()["commits"] == commits + 1
        assert db.execute("SELECT count(*) FROM t").scalar() == 20


def test_a_wait_handed_over_by_the_helper_holds_the_lock_until_released_once(db_path):
    from sqlite_gateway.processlock import ProcessLock
    lock = ProcessLock(db_path)
    lock.open()
    fd, fcntl = _other_holder(db_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(lock.acquire(HANG_S)))
        waiter.start()
        wait_until(lambda: lock.waits == 1, "the acquire waiting in the kernel")
        fcntl.flock(fd, fcntl.LOCK_UN)
        waiter.join(HANG_S)
        assert got == [True] and lock.held
        assert not _free(db_path)
        lock.release()
        lock.release()  # a second release (the worker's, after the early one) does nothing
        assert not lock.held and _free(db_path)
    finally:
        os.close(fd)
        lock.close()


def test_a_writer_that_stopped_waiting_leaves_the_lock_free_for_the_others(db_path):
    from sqlite_gateway.processlock import ProcessLock
    lock = ProcessLock(db_path)
    lock.open()
    fd, fcntl = _other_holder(db_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lock.acquire(0.05) is False  # the helper still waits in flock()
        fcntl.flock(fd, fcntl.LOCK_UN)
        # The helper gets it for nobody and must let it go, or every writer waits.
        wait_until(lambda: _free(db_path), "the lock free after the wait was abandoned")
        assert lock.acquire(HANG_S) is True
        lock.release()
    finally:
        os.close(fd)
        lock.close()


@pytest.mark.parametrize("helper", ["idle", "waiting"])
def test_close_ends_the_helper_and_never_keeps_the_lock(db_path, helper):
    from sqlite_gateway.processlock import ProcessLock
    lock = ProcessLock(db_path)
    lock.open()
    fd, fcntl = _other_holder(db_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lock.acquire(0.01) is False  # starts the helper, blocked in flock()
        if helper == "idle":
            fcntl.flock(fd, fcntl.LOCK_UN)
            wait_until(lambda: _free(db_path), "the helper back to idle")
        lock.close()
        lock.close()  # twice: nothing more
        if helper == "waiting":
            fcntl.flock(fd, fcntl.LOCK_UN)
        assert lock._helper is not None
        lock._helper.join(HANG_S)
        assert not lock._helper.is_alive()
        assert _free(db_path)
    finally:
        os.close(fd)


_WAITER = """
import sys, threading
from sqlite_gateway.processlock import ProcessLock
lock = ProcessLock(sys.argv[1])
lock.open()
got = []
waiter = threading.Thread(target=lambda: got.append(lock.acquire(60)))
waiter.start()
print("asked", flush=True)
waiter.join(60)
print("got" if got == [True] else "timed out", flush=True)
sys.stdin.readline()
lock.release()
lock.close()
"""


@contextlib.contextmanager
def _held_with_a_child_waiting(db_path: str) -> Iterator[tuple[Any, subprocess.Popen[str]]]:
    """This process holds the file's lock while a child (``_WAITER``) waits for it,
    its waiter mark seen; the child is killed if it is still running at the end."""
    from sqlite_gateway.processlock import ProcessLock, _others_wait
    assert _others_wait is not None
    lock = ProcessLock(db_path)
    lock.open()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        assert lock.acquire(HANG_S)
        with subprocess.Popen([sys.executable, "-c", _WAITER, db_path], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
            try:
                assert child.stdout is not None and child.stdout.readline().strip() == "asked"
                wait_until(lambda: _others_wait(lock._fd), "the child's waiter mark")
                yield lock, child
            finally:
                if child.poll() is None:
                    child.kill()
    finally:
        lock.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the waiter mark is Linux-only")
def test_a_writer_that_just_let_go_queues_behind_another_process_that_waits(db_path):
    # Without this the writer that lets go takes the lock again at once (its waiter
    # has not run yet): the waiting process waits another batch, its batch no bigger.
    with _held_with_a_child_waiting(db_path) as (lock, child):
        lock.release()
        assert lock.acquire(0) is False  # free this instant, but the child goes first
        assert child.stdout.readline().strip() == "got"
        child.stdin.write("\n")
        child.stdin.flush()
        assert lock.acquire(HANG_S) is True  # then this one
        lock.release()
        assert child.wait(HANG_S) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the waiter mark is Linux-only")
def test_a_waiter_killed_with_sigkill_leaves_no_mark_behind(db_path):
    # A mark that outlived its process would make every writer queue behind nobody.
    from sqlite_gateway.processlock import _others_wait
    assert _others_wait is not None
    with _held_with_a_child_waiting(db_path) as (lock, child):
        child.send_signal(signal.SIGKILL)
        child.wait(HANG_S)
        assert not _others_wait(lock._fd)
        lock.release()
        assert lock.acquire(0) is True  # nobody to queue behind
        assert lock.yields == 0
