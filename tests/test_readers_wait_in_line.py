"""Threads beyond the readers' count wait in line for a reader, and nobody waits
past the pool's patience plus its turn.

While the first in line has waited less than the patience, a reader given back
goes to the free stack and wakes it, and a thread that asks at that moment may
take it first (cheap: no hand-over between threads per read). Past the
patience, readers given back go to the first in line, and newcomers queue:
otherwise a busy thread that reads again and again could keep taking them
while a woken waiter finds none, until its timeout. Most tests here set the
patience to 0 (first come, first served at once).
"""

from __future__ import annotations

import threading

import pytest
from conftest import HANG_S, wait_until

from sqlite_gateway import Gateway, GatewayClosed, RequestTimeout

HOLD = "SELECT hold()"  # a read that keeps its reader until the test lets it go


@pytest.fixture
def let_go():
    return threading.Event()


@pytest.fixture
def db(db_path, let_go):
    def setup(conn):  # every reader gets hold(): it returns once the test lets it go
        conn.create_scalar_function("hold", lambda: let_go.wait(HANG_S) and 1, 0)

    with Gateway(db_path, readers=1, timeout=HANG_S, connection_setup=setup) as db:
        db.execute("CREATE TABLE t(x)")
        db.core.readers._patience = 0.0  # the first in line is past it at once
        yield db


def _line(db):
    return len(db.core.readers._waiters)


def _start(target):
    out: list[object] = []

    def run():
        try:
            out.append(target())
        except BaseException as exc:  # checked by the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_past_the_patience_a_reader_given_back_goes_to_the_waiting_thread_not_a_newcomer(
        db, let_go):
    snapshot = db.snapshot()
    snapshot.__enter__()  # this thread holds the only reader
    waiting, answer = _start(lambda: db.execute(HOLD).scalar())
    wait_until(lambda: _line(db) == 1, "the other thread in line for the reader")
    snapshot.__exit__(None, None, None)  # given back: it is the waiting thread's now
    # This thread asks at once, before the waiting one may even have run: it is
    # the newcomer, and waits behind it (here: not at all, so it gives up).
    with pytest.raises(RequestTimeout) as caught:
        with db.snapshot(timeout=0):
            pass
    assert not caught.value.started
    let_go.set()
    waiting.join(HANG_S)
    assert answer == [1]
    assert db.execute("SELECT count(*) FROM t").scalar() == 0  # and the reader serves on


def test_threads_in_line_get_the_reader_in_the_order_they_came(db):
    order: list[str] = []
    snapshot = db.snapshot()
    snapshot.__enter__()
    threads = []
    for count, name in enumerate(("first", "second", "third"), 1):
        threads.append(_start(lambda name=name: order.append(db.execute("SELECT ?", (name,))
                                                             .scalar()))[0])
        wait_until(lambda count=count: _line(db) == count, f"the {name} thread in line")
    snapshot.__exit__(None, None, None)
    for thread in threads:
        thread.join(HANG_S)
    assert order == ["first", "second", "third"]


def test_a_thread_that_stopped_waiting_leaves_the_line(db):
    snapshot = db.snapshot()
    snapshot.__enter__()
    gave_up, answer = _start(lambda: db.execute("SELECT 1", timeout=0.2))
    gave_up.join(HANG_S)
    assert isinstance(answer[0], RequestTimeout) and not answer[0].started
    assert _line(db) == 0
    snapshot.__exit__(None, None, None)
    # The reader went back to the pool, not to the thread that gave up.
    reader, answer = _start(lambda: db.execute("SELECT 2", timeout=HANG_S).scalar())
    reader.join(HANG_S)
    assert answer == [2]


def test_within_the_patience_the_woken_thread_takes_the_reader_nobody_else_took(db):
    db.core.readers._patience = 1e9
    snapshot = db.snapshot()
    snapshot.__enter__()
    waiting, answer = _start(lambda: db.execute("SELECT 3").scalar())
    wait_until(lambda: _line(db) == 1, "the other thread in line for the reader")
    snapshot.__exit__(None, None, None)  # to the free stack; the waiting thread is woken
    waiting.join(HANG_S)
    assert answer == [3] and _line(db) == 0


def test_close_answers_the_threads_in_line(db_path):
    db = Gateway(db_path, readers=1, timeout=None).start()
    snapshot = db.snapshot()
    snapshot.__enter__()
    waiting, answer = _start(lambda: db.execute("SELECT 1"))
    wait_until(lambda: _line(db) == 1, "the other thread in line for the reader")
    db.close(timeout=HANG_S)
    waiting.join(HANG_S)
    assert not waiting.is_alive()
    assert len(answer) == 1 and isinstance(answer[0], GatewayClosed)
    snapshot.__exit__(None, None, None)


def test_a_thread_interrupted_in_line_leaves_it_and_nothing_is_lost(db, monkeypatch):
    from sqlite_gateway import readerpool

    class Interrupted:  # Ctrl-C landing in the wait (the main thread's lot)
        def __init__(self):
            self.lock = threading.Lock()
            self.lock.acquire()

        def acquire(self, *args):
            raise KeyboardInterrupt

        def release(self):
            self.lock.release()

    made = readerpool._Waiter.__init__

    def waiter_init(self, since):
        made(self, since)
        self.ready = Interrupted()

    snapshot = db.snapshot()
    snapshot.__enter__()
    monkeypatch.setattr(readerpool._Waiter, "__init__", waiter_init)
    interrupted, answer = _start(lambda: db.execute("SELECT 1"))
    interrupted.join(HANG_S)
    monkeypatch.undo()
    assert len(answer) == 1 and isinstance(answer[0], KeyboardInterrupt)
    assert _line(db) == 0
    snapshot.__exit__(None, None, None)
    assert db.execute("SELECT 2", timeout=HANG_S).scalar() == 2


def test_a_reader_kept_by_its_owner_goes_to_a_thread_that_got_in_line_meanwhile(db):
    # The owner's read ends as another thread gets in line: the owner found
    # nobody in line and keeps its reader, the other found it in use and waits.
    # Once kept (idle), it goes to the waiting thread.
    pool = db.core.readers
    db.execute("SELECT 1")  # this thread owns the only reader
    (reader,) = pool._all
    reader.lock.acquire()  # its read, still running
    waiting, answer = _start(lambda: db.execute("SELECT 4").scalar())
    wait_until(lambda: _line(db) == 1, "the other thread in line for the reader")
    reader.lock.release()  # the end of the owner's read, which kept the reader...
    pool._kept()  # ...and then looks for a line, as the lean read and _release do
    waiting.join(HANG_S)
    assert answer == [4]
