"""The threaded and the asyncio doors behave alike: the same cases run through both.

A ``door`` is a driver with the threaded call signatures: the sync one calls
the Gateway, the async one runs each call as a coroutine of an AsyncGateway on
an event loop in another thread and waits for it. The last tests are the
async door's own: cancellation, its loops, its use of the core only.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import logging
import re
import threading
import time
import weakref
from pathlib import Path

import apsw
import pytest
from conftest import WorkerBlocker, scalar

from sqlite_gateway import Gateway, Overloaded, RequestTimeout
from sqlite_gateway.integrations.asyncio import AsyncGateway

BOUND_S = 20  # a bound that detects a hang, not a timing goal
ROOT = Path(__file__).resolve().parent.parent


class SyncDoor:
    name = "sync"

    def __init__(self, db: Gateway) -> None:
        self.db = db

    def execute(self, *args, **kwargs):
        return self.db.execute(*args, **kwargs)

    def executemany(self, *args, **kwargs):
        return self.db.executemany(*args, **kwargs)

    def bulk(self, *args, **kwargs):
        return self.db.bulk(*args, **kwargs)

    def flush(self, *args, **kwargs):
        return self.db.flush(*args, **kwargs)

    def post(self, *args, **kwargs):
        return self.db.post(*args, **kwargs)

    def submit(self, *args, **kwargs):
        return self.db.submit(*args, **kwargs).result(BOUND_S)

    def failures(self):
        return self.db.failures()

    def close(self) -> None:
        pass


class AsyncDoor:
    name = "async"

    def __init__(self, db: Gateway) -> None:
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.adb = AsyncGateway(db)

    def _run(self, make):
        async def call():
            return await make()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(BOUND_S * 3)

    def execute(self, *args, **kwargs):
        return self._run(lambda: self.adb.execute(*args, **kwargs))

    def executemany(self, *args, **kwargs):
        return self._run(lambda: self.adb.executemany(*args, **kwargs))

    def bulk(self, *args, **kwargs):
        return self._run(lambda: self.adb.bulk(*args, **kwargs))

    def flush(self, *args, **kwargs):
        return self._run(lambda: self.adb.flush(*args, **kwargs))

    def post(self, *args, **kwargs):
        return self._run(lambda: self.adb.post(*args, **kwargs))

    def submit(self, *args, **kwargs):
        async def submitted():
            return await self.adb.submit(*args, **kwargs)
        return self._run(submitted)

    def failures(self):
        return self.adb.failures()

    def close(self) -> None:
        async def stop():
            await self.adb.__aexit__(None, None, None)  # its threads only: the gateway is shared
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(BOUND_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND_S)
        self.loop.close()


@pytest.fixture(params=[SyncDoor, AsyncDoor], ids=["sync", "async"])
def make_door(request):
    doors = []

    def make(db: Gateway):
        door = request.param(db)
        doors.append(door)
        return door

    yield make
    for door in doors:
        door.close()


def in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised below
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _note(exc: BaseException) -> str:
    return " ".join(getattr(exc, "__notes__", []))


# -- bulk -------------------------------------------------------------------------

HELD = 40  # the parameter set whose slice is held up on the worker


def test_a_bulk_slice_that_timed_out_may_still_commit_and_the_note_says_so(db_path, make_door):
    release = threading.Event()

    def gate(x: int) -> int:  # runs on the worker, inside a slice
        if x == HELD:
            release.wait(BOUND_S)
        return x

    with Gateway(db_path, background_slice=1e-6) as db:
        door = make_door(db)
        db.execute("CREATE TABLE t(x INTEGER)")
        db.run_exclusive(lambda conn: conn.create_scalar_function("gate", gate, 1))
        try:
            with pytest.raises(RequestTimeout) as caught:
                door.bulk("INSERT INTO t VALUES (gate(?))", [(i,) for i in range(100)],
                          timeout=0.5)
            note = _note(caught.value)
            known = int(re.search(r"bulk\(\): (\d+) of 100", note)[1])
            assert scalar(db_path, "SELECT count(*) FROM t") == known
        finally:
            release.set()
        db.flush()
        assert scalar(db_path, "SELECT count(*) FROM t") > known  # it did commit after all
        assert "may still commit" in note and "did not run" not in note, note


def test_a_background_bulk_yields_the_writer_to_interactive_work(db_path, make_door):
    reached, web_queued = threading.Event(), threading.Event()

    def gate(x: int) -> int:
        if x == 10:
            reached.set()
            web_queued.wait(BOUND_S)
        return x

    with Gateway(db_path, background_slice=60.0) as db:  # a slice would never end by time
        door = make_door(db)
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
        db.run_exclusive(lambda conn: conn.create_scalar_function("gate", gate, 1))
        job, job_out = in_thread(lambda: door.bulk("INSERT INTO t(x) VALUES (gate(?))",
                                                   [(i,) for i in range(200)]))
        assert reached.wait(BOUND_S)
        web, web_out = in_thread(lambda: door.execute("INSERT INTO t(x) VALUES ('web')"))
        deadline = time.monotonic() + BOUND_S
        while db.stats()["queued"] < 1:
            assert time.monotonic() < deadline, "the interactive call was never queued"
            threading.Event().wait(0.001)
        web_queued.set()
        for thread in (job, web):
            thread.join(BOUND_S * 2)
        assert "error" not in job_out and "error" not in web_out, (job_out, web_out)
        assert job_out["value"] == 200
        web_id = db.execute("SELECT id FROM t WHERE x = 'web'").scalar()
        assert web_id < db.execute("SELECT max(id) FROM t").scalar()  # in between the slices


# -- write-behind and its failures ---------------------------------------------------

def test_post_failures_are_kept_and_each_flush_rearms_the_error_log(db_path, make_door,
                                                                     caplog):
    with Gateway(db_path) as db:
        door = make_door(db)
        db.execute("CREATE TABLE t(x INTEGER UNIQUE)")
        door.post("INSERT INTO t VALUES (1)")
        with caplog.at_level(logging.ERROR, logger="sqlite_gateway"):
            for _ in range(2):
                door.post("INSERT INTO t VALUES (1)")  # fails: UNIQUE
                door.flush()
        logged = [r for r in caplog.records if "a posted write failed" in r.getMessage()]
        assert len(logged) == 2  # one per barrier interval
        failed = door.failures()
        assert len(failed) == 2 and all(isinstance(f.error, apsw.ConstraintError)
                                        for f in failed)
        assert door.failures() == []
        assert db.execute("SELECT count(*) FROM t").scalar() == 1


def test_blocking_producers_wait_for_room_and_lose_nothing(db_path, make_door):
    with Gateway(db_path, queue_size=10) as db:
        door = make_door(db)
        db.execute("CREATE TABLE t(x)")
        blocker = WorkerBlocker(db)
        producer, out = in_thread(lambda: [
            door.post("INSERT INTO t VALUES (?)", (i,), priority="background", block=True)
            for i in range(30)])
        try:
            deadline = time.monotonic() + BOUND_S
            while db.stats()["queued"] < db.core.queue.high_water:  # the producer is held back
                assert time.monotonic() < deadline
                threading.Event().wait(0.005)
            assert producer.is_alive()
            with pytest.raises(ValueError, match="background"):
                door.post("INSERT INTO t VALUES (-1)", block=True)  # interactive: fail fast
        finally:
            blocker.done()
        producer.join(BOUND_S)
        assert "error" not in out, out
        assert door.submit("INSERT INTO t VALUES (30)", priority="background", block=True,
                           timeout=BOUND_S).rowcount == 1
        door.flush()
        assert db.execute("SELECT count(*) FROM t").scalar() == 31


def test_flush_is_admitted_when_the_queue_is_full(db_path, make_door):
    with Gateway(db_path, queue_size=2) as db:
        door = make_door(db)
        db.execute("CREATE TABLE t(x)")
        blocker = WorkerBlocker(db)
        try:
            db.post("INSERT INTO t VALUES (1)")
            db.post("INSERT INTO t VALUES (2)")
            with pytest.raises(Overloaded):
                db.post("INSERT INTO t VALUES (3)")
            flusher, out = in_thread(door.flush)
            deadline = time.monotonic() + BOUND_S
            while db.stats()["queued"] < 3:
                assert flusher.is_alive() and time.monotonic() < deadline, out
                threading.Event().wait(0.005)
        finally:
            blocker.done()
        flusher.join(BOUND_S)
        assert out == {"value": None}
        assert db.execute("SELECT count(*) FROM t").scalar() == 2


# -- input checked at the call --------------------------------------------------------

def test_a_timeout_too_long_to_wait_on_is_refused_before_anything_runs(db_path, make_door):
    with Gateway(db_path) as db:
        door = make_door(db)
        db.execute("CREATE TABLE t(x)")
        too_long = threading.TIMEOUT_MAX * 2
        for call in (lambda: door.execute("INSERT INTO t VALUES (1)", timeout=too_long),
                     lambda: door.executemany("INSERT INTO t VALUES (?)", [(1,)],
                                              timeout=too_long),
                     lambda: door.bulk("INSERT INTO t VALUES (?)", [(1,)], timeout=too_long),
                     lambda: door.post("INSERT INTO t VALUES (1)", priority="background",
                                       block=True, timeout=too_long),
                     lambda: door.flush(timeout=too_long)):
            with pytest.raises(ValueError, match="TIMEOUT_MAX"):
                call()
        db.flush()
        assert db.execute("SELECT count(*) FROM t").scalar() == 0


def test_a_missing_named_parameter_is_named(db_path, make_door):
    with Gateway(db_path) as db:
        door = make_door(db)
        db.execute("CREATE TABLE t(x)")
        for sql in ("INSERT INTO t VALUES (:x)", "SELECT :x"):
            with pytest.raises(KeyError, match="parameter :x.*'y'"):
                door.execute(sql, {"y": 1})


@pytest.mark.parametrize("readers", [0, 2])
def test_a_multi_statement_text_keeps_the_columns_of_its_rows(db_path, make_door, readers):
    with Gateway(db_path, readers=readers) as db:
        door = make_door(db)
        for _ in range(2):
            result = door.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
            assert (result.columns, result.rows) == (("b", "c"), ((2, 3),))


# -- the async door's own -----------------------------------------------------------

def test_async_parameter_sets_are_captured_at_the_call(db_path):
    async def main(db):
        adb = AsyncGateway(db)
        rows = [[1], [2]]
        blob = bytearray(b"ab")
        blocker = WorkerBlocker(db)
        try:
            many = asyncio.ensure_future(adb.executemany("INSERT INTO t VALUES (?)", rows))
            bulk = asyncio.ensure_future(adb.bulk("INSERT INTO t VALUES (?)", [[blob]]))
            deadline = time.monotonic() + BOUND_S
            while db.stats()["queued"] < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
            rows[0][0] = 99
            blob[:] = b"zz"
        finally:
            blocker.done()
        assert (await many).rowcount == 2 and await bulk == 1
        await adb.__aexit__(None, None, None)

    with Gateway(db_path) as db:
        db.execute("CREATE TABLE t(x)")
        asyncio.run(main(db))
        assert sorted(db.execute("SELECT x FROM t").rows, key=repr) == [(1,), (2,), (b"ab",)]


ENDLESS_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) FROM c")


def test_a_cancelled_async_read_is_stopped_and_frees_its_reader(db_path):
    async def main(db):
        adb = AsyncGateway(db, read_threads=1)
        endless = asyncio.ensure_future(adb.execute(ENDLESS_READ, timeout=600))
        readers = db.core.readers
        deadline = time.monotonic() + BOUND_S
        while not (readers._all and not readers._free):  # the read holds the one reader
            assert time.monotonic() < deadline, "the read never started"
            await asyncio.sleep(0.001)
        endless.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await endless
        assert "stopped" in _note(caught.value)
        # The one reader and the one read thread serve the next read at once.
        assert (await adb.execute("SELECT 42", timeout=BOUND_S)).scalar() == 42
        await adb.__aexit__(None, None, None)

    with Gateway(db_path, readers=1) as db:
        asyncio.run(main(db))


def test_loops_closed_with_answers_pending_are_freed(db_path):
    with Gateway(db_path) as db:
        db.execute("CREATE TABLE t(x)")
        adb = AsyncGateway(db)
        loops = []
        for _ in range(10):
            loop = asyncio.new_event_loop()
            blocker = WorkerBlocker(db)

            async def submit():
                adb.submit("INSERT INTO t VALUES (1)")
                adb.submit_transaction(lambda conn: None)

            loop.run_until_complete(submit())
            blocker.done()
            db.flush()  # the answers reach the loop, which never runs again
            loop.close()
            loops.append(weakref.ref(loop))
            del loop
        gc.collect()
        assert [ref for ref in loops if ref() is not None] == []
        assert db.execute("SELECT count(*) FROM t").scalar() == 10


def test_the_async_door_uses_only_public_names_of_the_gateway():
    tree = ast.parse((ROOT / "sqlite_gateway/integrations/asyncio.py").read_text())
    private = sorted({
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Attribute) and node.value.attr in ("gateway", "_core")})
    assert private == []
    for name in ("post", "failures", "submit", "submit_transaction", "flush", "bulk"):
        assert hasattr(AsyncGateway, name)
