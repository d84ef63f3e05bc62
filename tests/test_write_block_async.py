"""``async with adb.writer() as w:``: write blocks on an event loop."""

from __future__ import annotations

import asyncio
import threading

import apsw
import pytest
from conftest import scalar

from sqlite_gateway import Gateway, RequestTimeout, WriteBlockExpired
from sqlite_gateway.integrations.asyncio import AsyncGateway

WIDE = 30


@pytest.fixture
def shared(db_path):
    with Gateway(db_path, timeout=WIDE) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        db.execute("CREATE TABLE counter(n INTEGER NOT NULL)")
        db.execute("INSERT INTO counter VALUES (0)")
        yield db


@pytest.mark.asyncio
async def test_read_modify_write_from_many_tasks_is_exact(shared):
    adb = AsyncGateway(shared)

    async def increment():
        for _ in range(5):
            async with adb.writer() as w:
                n = (await w.execute("SELECT n FROM counter")).scalar()
                await asyncio.sleep(0)  # other tasks run meanwhile
                await w.execute("UPDATE counter SET n = ?", (n + 1,))

    await asyncio.gather(*(increment() for _ in range(8)))
    assert shared.execute("SELECT n FROM counter").scalar() == 40


@pytest.mark.asyncio
async def test_the_loop_keeps_running_while_a_block_waits_and_holds(shared, db_path):
    adb = AsyncGateway(shared)
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    async with adb.writer() as w:
        before = ticks
        await w.execute("INSERT INTO items(name) VALUES ('a')")
        await w.executemany("INSERT INTO items(name) VALUES (?)", [("b",), ("c",)])
        assert ticks > before  # the statements ran off the loop
        assert scalar(db_path, "SELECT count(*) FROM items") == 0
    assert scalar(db_path, "SELECT count(*) FROM items") == 3  # committed on leaving
    stop.set()
    await task


@pytest.mark.asyncio
async def test_an_exception_rolls_back_and_savepoints_roll_back_alone(shared):
    adb = AsyncGateway(shared)
    with pytest.raises(KeyError):
        async with adb.writer() as w:
            await w.execute("INSERT INTO items(name) VALUES ('undone')")
            raise KeyError("mine")
    async with adb.writer() as w:
        await w.execute("INSERT INTO items(name) VALUES ('kept')")
        with pytest.raises(apsw.ConstraintError):
            async with w.savepoint():
                await w.execute("INSERT INTO items(name) VALUES ('unit')")
                await w.execute("INSERT INTO items(name) VALUES ('kept')")
    assert [r[0] for r in shared.execute("SELECT name FROM items").rows] == ["kept"]


@pytest.mark.asyncio
async def test_cancelled_while_waiting_for_the_writer_the_block_never_runs(shared):
    adb = AsyncGateway(shared)
    held, release = threading.Event(), threading.Event()

    def hold():
        with shared.writer() as w:
            w.execute("INSERT INTO items(name) VALUES ('first')")
            held.set()
            release.wait(WIDE)

    thread = threading.Thread(target=hold)
    thread.start()
    assert await asyncio.get_running_loop().run_in_executor(None, held.wait, WIDE)

    async def second():
        async with adb.writer() as w:
            await w.execute("INSERT INTO items(name) VALUES ('never')")

    task = asyncio.create_task(second())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RequestTimeout):
        async with adb.writer(timeout=0.05) as w:
            await w.execute("INSERT INTO items(name) VALUES ('never either')")
    release.set()
    await asyncio.get_running_loop().run_in_executor(None, thread.join, WIDE)
    await adb.flush()
    assert [r[0] for r in shared.execute("SELECT name FROM items").rows] == ["first"]
    assert shared.stats()["write_blocks"] == 1


@pytest.mark.asyncio
async def test_the_hold_limit_applies_to_async_blocks(db_path):
    async with AsyncGateway(db_path, hold_limit=0.2, timeout=WIDE) as adb:
        await adb.execute("CREATE TABLE items(name TEXT)")
        with pytest.raises(WriteBlockExpired):
            async with adb.writer() as w:
                await w.execute("INSERT INTO items VALUES ('slow')")
                for _ in range(WIDE * 100):
                    if not w.held:
                        break
                    await asyncio.sleep(0.01)
        assert (await adb.execute("SELECT count(*) FROM items")).scalar() == 0


@pytest.mark.asyncio
async def test_a_task_cancelled_inside_its_block_rolls_it_back(shared):
    adb = AsyncGateway(shared)
    inside = asyncio.Event()

    async def hold():
        async with adb.writer() as w:
            await w.execute("INSERT INTO items(name) VALUES ('undone')")
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(hold())
    await asyncio.wait_for(inside.wait(), WIDE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with adb.writer() as w:  # the writer is free again at once
        await w.execute("INSERT INTO items(name) VALUES ('next')")
    assert [r[0] for r in shared.execute("SELECT name FROM items").rows] == ["next"]
    assert shared.stats()["write_blocks_expired"] == 0
