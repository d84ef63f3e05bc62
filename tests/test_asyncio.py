"""AsyncGateway: await-able calls over the same worker; cancellation, timeouts, closing."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import apsw
import pytest

from conftest import WorkerBlocker, scalar
from sqlite_gateway import Gateway, GatewayClosed, RequestTimeout
from sqlite_gateway.integrations.asyncio import AsyncGateway

SCHEMA = ("CREATE TABLE pages(name TEXT PRIMARY KEY, views INTEGER NOT NULL);"
          "CREATE TABLE views(id INTEGER PRIMARY KEY, page TEXT NOT NULL, ts REAL);"
          "INSERT INTO pages VALUES ('home', 0), ('about', 0)")


def view(conn, page, now):
    conn.execute("INSERT INTO views(page, ts) VALUES (?, ?)", (page, now))
    conn.execute("UPDATE pages SET views = views + 1 WHERE name = ?", (page,))
    return conn.execute("SELECT views FROM pages WHERE name = ?", (page,)).scalar()


@pytest.fixture(params=[0, 2], ids=["no-readers", "readers"])
def shared(db_path, request):
    """A started Gateway with the schema, shared by the test's AsyncGateway; always closed.
    With readers, execute() tries a read thread first: writes must keep their meaning."""
    db = Gateway(db_path, timeout=30, readers=request.param).start()
    db.execute(SCHEMA)
    try:
        yield db
    finally:
        db.close(timeout=30)


async def _until(predicate, what, seconds=10.0):
    """Yield to the loop until predicate() holds (a hang detector, not a timing goal)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_every_call_awaits_and_commits(db_path):
    async with AsyncGateway(db_path) as db:
        await db.execute(SCHEMA)
        assert await db.transaction(view, "home", 1.0) == 1
        assert (await db.executemany("INSERT INTO views(page) VALUES (?)",
                                     [("a",), ("b",)])).rowcount == 2
        pending = db.submit("INSERT INTO views(page) VALUES (?)", ("c",))
        later = db.submit_transaction(view, "about", 2.0)
        await db.flush()
        assert pending.done() and (await pending).rowcount == 1 and await later == 1
        assert await db.bulk("INSERT INTO views(page) VALUES (?)", [("x",)] * 300) == 300
        mode = await db.run_exclusive(lambda conn: conn.execute("PRAGMA journal_mode").fetchall())
        assert mode == [("wal",)]
        with pytest.raises(apsw.ConstraintError):  # SQLite's own error class, unwrapped
            await db.execute("INSERT INTO pages VALUES ('home', 0)")
        assert (await db.execute("SELECT count(*) FROM views")).scalar() == 305
    assert db.gateway.state.value == "closed"
    assert scalar(db_path, "SELECT sum(views) FROM pages") == 2


@pytest.mark.asyncio
async def test_leaving_async_with_closes_only_a_gateway_it_started(shared, db_path):
    async with AsyncGateway(shared) as db:
        assert await db.transaction(view, "home", 0.0) == 1
    assert shared.state.value == "running"  # shared: still the threads' to close
    fresh = Gateway(db_path)
    async with AsyncGateway(fresh):
        pass
    assert fresh.state.value == "closed"  # started here: closed here


@pytest.mark.asyncio
async def test_a_coroutine_fn_is_refused_with_the_reason(shared):
    async def fn(conn):
        return 1

    db = AsyncGateway(shared)
    with pytest.raises(TypeError, match="cannot await"):
        await db.transaction(fn)
    with pytest.raises(TypeError, match="cannot await"):
        db.submit_transaction(fn)


@pytest.mark.asyncio
async def test_bad_input_is_refused_before_anything_is_queued(shared):
    db = AsyncGateway(shared)
    params = ["home", 1.0]
    for bad in (-1, float("nan"), float("inf"), "soon", True):
        with pytest.raises(ValueError, match="timeout must be"):
            await db.transaction(view, "home", 0.0, timeout=bad)
    with pytest.raises(TypeError):
        await db.execute("INSERT INTO views(page, ts) VALUES (?, ?)", "not params")
    blocker = WorkerBlocker(shared)
    pending = asyncio.ensure_future(
        db.execute("INSERT INTO views(page, ts) VALUES (?, ?)", params))
    await _until(lambda: shared.stats()["queued"] == 1, "request queued")
    params[0] = "changed"  # after the call: the queued request keeps what it was given
    blocker.done()
    assert (await pending).rowcount == 1
    assert shared.execute("SELECT page FROM views").rows == (("home",),)
    # None of the refused transactions ran: no view was counted.
    assert shared.execute("SELECT views FROM pages WHERE name = 'home'").scalar() == 0


@pytest.mark.asyncio
async def test_a_thousand_waiting_tasks_cost_no_threads(shared):
    db = AsyncGateway(shared)
    blocker = WorkerBlocker(shared)
    threads = threading.active_count()
    tasks = [asyncio.ensure_future(db.transaction(view, "home", 0.0)) for _ in range(1000)]
    await _until(lambda: shared.stats()["queued"] == 1000, "1000 requests queued")
    assert threading.active_count() == threads
    blocker.done()
    assert sorted(await asyncio.gather(*tasks)) == list(range(1, 1001))



def cancel_notes(exc: BaseException) -> list[str]:
    """The gateway's notes on a CancelledError got by awaiting a cancelled task. On Python
    3.10 asyncio raises a new CancelledError there, with the task's own (the one the
    gateway noted) as its __context__; from 3.11 on it raises the task's own."""
    notes: list[str] = []
    while isinstance(exc, asyncio.CancelledError):
        notes += getattr(exc, "__notes__", [])
        exc = exc.__context__  # type: ignore[assignment]
    return notes


@pytest.mark.asyncio
async def test_cancelled_before_it_started_it_never_runs(shared):
    db = AsyncGateway(shared)
    blocker = WorkerBlocker(shared)
    try:
        task = asyncio.ensure_future(db.execute("INSERT INTO views(page) VALUES ('never')"))
        await _until(lambda: shared.stats()["queued"] == 1, "request queued")
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
    finally:
        blocker.done()
    assert any("before the request started; it will not run" in n
               for n in cancel_notes(info.value))
    await db.flush()
    assert shared.execute("SELECT count(*) FROM views WHERE page = 'never'").scalar() == 0


@pytest.mark.asyncio
async def test_cancelled_after_it_started_it_may_still_commit_and_says_so(shared):
    db = AsyncGateway(shared)
    entered, go = threading.Event(), threading.Event()

    def slow(conn):
        entered.set()
        assert go.wait(30)
        conn.execute("INSERT INTO views(page) VALUES ('late')")

    task = asyncio.ensure_future(db.transaction(slow))
    await _until(entered.is_set, "fn started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    go.set()
    assert any("after the request started; it may still commit" in n
               for n in cancel_notes(info.value))
    await db.flush()
    assert shared.execute("SELECT count(*) FROM views WHERE page = 'late'").scalar() == 1


@pytest.mark.asyncio
async def test_timeouts_say_whether_it_had_started(shared):
    db = AsyncGateway(shared)
    blocker = WorkerBlocker(shared)
    try:
        with pytest.raises(RequestTimeout) as before:
            await db.execute("INSERT INTO views(page) VALUES ('never')", timeout=0.05)
    finally:
        blocker.done()
    assert before.value.started is False

    entered, go = threading.Event(), threading.Event()

    def slow(conn):
        entered.set()
        assert go.wait(30)
        conn.execute("INSERT INTO views(page) VALUES ('late')")

    with pytest.raises(RequestTimeout) as after:
        await db.transaction(slow, timeout=0.2)
    go.set()
    assert entered.is_set() and after.value.started is True
    await db.flush()
    rows = dict(shared.execute("SELECT page, count(*) FROM views GROUP BY page").rows)
    assert rows == {"late": 1}


@pytest.mark.asyncio
async def test_closing_while_tasks_wait_answers_every_one(db_path):
    db = AsyncGateway(db_path)
    await db.start()
    await db.execute(SCHEMA)
    blocker = WorkerBlocker(db.gateway)
    tasks = [asyncio.ensure_future(db.transaction(view, "home", 0.0)) for _ in range(50)]
    await _until(lambda: db.stats()["queued"] == 50, "50 requests queued")
    closing = asyncio.ensure_future(db.aclose())
    await _until(lambda: db.gateway.state.value == "closing", "gateway closing")
    with pytest.raises(GatewayClosed):
        await db.execute("SELECT 1")  # nothing new is accepted once close() began
    blocker.done()
    await closing
    assert sorted(await asyncio.gather(*tasks)) == list(range(1, 51))  # all drained
    assert scalar(db_path, "SELECT views FROM pages WHERE name = 'home'") == 50


def test_an_answer_after_its_loop_closed_does_not_disturb_the_worker(shared, caplog):
    db = AsyncGateway(shared)
    blocker = WorkerBlocker(shared)

    async def submit_and_leave():
        return db.submit("INSERT INTO views(page) VALUES ('orphan')")

    loop = asyncio.new_event_loop()
    try:
        orphan = loop.run_until_complete(submit_and_leave())
    finally:
        loop.close()
    with caplog.at_level(logging.WARNING):
        blocker.done()
        shared.flush()
        assert shared.execute("SELECT count(*) FROM views WHERE page = 'orphan'").scalar() == 1
    assert not orphan.done()  # nobody could deliver it: its loop is gone
    assert shared.state.value == "running"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_cancelled_write_behind_future_never_runs_and_loops_are_not_kept(shared):
    from sqlite_gateway.integrations import loopbridge as integration

    db = AsyncGateway(shared)
    blocker = WorkerBlocker(shared)

    async def submit_then_cancel():
        future = db.submit("INSERT INTO views(page) VALUES ('cancelled')")
        kept = db.submit("INSERT INTO views(page) VALUES ('kept')")
        future.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the request
        blocker.done()
        return (await kept).rowcount

    try:
        assert asyncio.run(submit_then_cancel()) == 1
    finally:
        blocker.release.set()
    rows = dict(shared.execute("SELECT page, count(*) FROM views GROUP BY page").rows)
    assert rows == {"kept": 1}
    gc.collect()
    assert len(integration._inboxes) == 0  # a finished loop is not kept alive by its inbox


@pytest.mark.asyncio
async def test_reads_run_off_the_loop_and_writes_still_reach_the_writer(db_path):
    async with AsyncGateway(db_path, readers=2) as db:
        await db.execute(SCHEMA)
        loop_thread = threading.get_ident()
        ran_on = []

        def where(conn):
            ran_on.append(threading.get_ident())

        await db.run_exclusive(where)
        reads_before = db.stats()["reads"]
        assert (await db.execute("SELECT count(*) FROM pages")).scalar() == 2
        assert db.stats()["reads"] == reads_before + 1  # served by a reader, not the writer
        for _ in range(3):  # a write given to execute() still commits, every time
            await db.execute("UPDATE pages SET views = views + 1 WHERE name = 'home'")
        assert (await db.execute("SELECT views FROM pages WHERE name = 'home'")).scalar() == 3
        assert ran_on and ran_on[0] != loop_thread


@pytest.mark.asyncio
async def test_async_and_threaded_callers_share_one_worker(shared):
    db = AsyncGateway(shared)

    def threaded():
        for _ in range(100):
            shared.transaction(view, "about", 0.0)

    worker = threading.Thread(target=threaded)
    worker.start()
    await asyncio.gather(*[db.transaction(view, "home", 0.0) for _ in range(300)])
    await asyncio.get_running_loop().run_in_executor(None, worker.join, 30)
    assert dict(shared.execute("SELECT name, views FROM pages").rows) == {"home": 300,
                                                                          "about": 100}
