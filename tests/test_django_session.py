"""The exclusive session the Django backend runs schema changes in: the writer held alone,
outside any transaction, with foreign keys off, and always given back with them on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import apsw
import pytest

pytest.importorskip("django")

from sqlite_gateway import Gateway, RequestTimeout  # noqa: E402
from sqlite_gateway.integrations.django.exclusive import (  # noqa: E402
    ExclusiveSession, SessionExpired)

SCHEMA = """
CREATE TABLE parent(id INTEGER PRIMARY KEY);
CREATE TABLE child(id INTEGER PRIMARY KEY,
                   parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE);
INSERT INTO parent VALUES (1);
INSERT INTO child VALUES (1, 1);
"""


def wait_until(condition: Callable[[], bool], what: str, bound: float = 30.0) -> None:
    give_up = time.monotonic() + bound
    while not condition():  # bounded: give_up
        if time.monotonic() > give_up:
            pytest.fail(f"not reached within {bound} s: {what}")
        time.sleep(0.01)


def foreign_keys(db: Gateway) -> int:
    value: int = db.run_exclusive(lambda c: c.execute("PRAGMA foreign_keys").fetchall()[0][0])
    return value


@pytest.fixture
def db(db_path: str) -> Gateway:
    gateway = Gateway(db_path, busy_timeout=0.5, hang_timeout=2.6).start()
    gateway.execute(SCHEMA)
    yield gateway
    gateway.close(timeout=30)


def test_a_table_rebuild_in_a_session_keeps_the_rows_that_refer_to_it(db: Gateway) -> None:
    session = ExclusiveSession.open(db, 5.0)
    try:
        assert session.execute("PRAGMA foreign_keys").rows == ((0,),)
        session.execute("BEGIN")
        session.execute("CREATE TABLE new_parent(id INTEGER PRIMARY KEY, name TEXT)")
        session.execute("INSERT INTO new_parent(id) SELECT id FROM parent")
        session.execute("DROP TABLE parent")  # with foreign keys on: cascades to child
        session.execute("ALTER TABLE new_parent RENAME TO parent")
        session.execute("COMMIT")
    finally:
        session.close()
    assert db.execute("SELECT count(*) FROM child").scalar() == 1
    assert foreign_keys(db) == 1


def test_a_session_left_open_in_a_transaction_is_rolled_back(db: Gateway) -> None:
    session = ExclusiveSession.open(db, 5.0)
    session.execute("BEGIN")
    session.execute("DELETE FROM child")
    assert session.in_transaction
    session.close()
    assert db.execute("SELECT count(*) FROM child").scalar() == 1
    assert foreign_keys(db) == 1


def test_a_session_past_its_limit_ends_and_says_so(db: Gateway) -> None:
    session = ExclusiveSession.open(db, 5.0)  # limit: hang_timeout 2.6 less the margin
    session.execute("BEGIN")
    session.execute("DELETE FROM child")
    wait_until(lambda: session.ended, "the session passed its limit")
    with pytest.raises(SessionExpired, match="hang_timeout"):
        session.execute("SELECT 1")
    session.close()
    assert db.execute("SELECT count(*) FROM child").scalar() == 1
    assert foreign_keys(db) == 1
    assert db.stats()["state"] == "running"  # the watchdog never took it for a hang


def test_a_session_whose_owner_thread_ended_gives_the_writer_back(db_path: str) -> None:
    with Gateway(db_path, hang_timeout=None) as db:  # no limit: only the owner's end ends it
        db.execute(SCHEMA)
        opened = threading.Thread(target=lambda: ExclusiveSession.open(db, 5.0))
        opened.start()
        opened.join(30)
        db.execute("INSERT INTO parent VALUES (2)", timeout=30)  # waits for it to end
        assert foreign_keys(db) == 1


def test_a_session_that_cannot_start_in_time_never_runs(db: Gateway) -> None:
    held, release = threading.Event(), threading.Event()

    def hold_writer() -> None:
        with db.writer(timeout=10):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_writer)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(RequestTimeout):
            ExclusiveSession.open(db, 0.2)
    finally:
        release.set()
        holder.join(30)
    db.execute("INSERT INTO parent VALUES (3)")  # the writer is free: the late session ended
    assert foreign_keys(db) == 1
    with pytest.raises(apsw.ConstraintError):
        db.execute("INSERT INTO child VALUES (9, 999)")  # foreign keys are enforced
