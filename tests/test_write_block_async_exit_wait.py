"""``async with adb.writer()``: an exit whose wait ends early leaves no unread future.

When the exit's wait for the rollback of a block whose body raised times out,
the answer still arrives later; asyncio logged "Future exception was never
retrieved" for it (seen by the history checker under tight deadlines).
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from sqlite_gateway import RequestTimeout
from sqlite_gateway.integrations.asyncio import AsyncGateway


class Boom(Exception):
    pass


@pytest.mark.asyncio
async def test_an_early_exit_wait_of_a_block_whose_body_raised_logs_nothing(db_path):
    loop = asyncio.get_running_loop()
    logged: list[str] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context["message"]))
    async with AsyncGateway(db_path, timeout=30) as adb:
        await adb.execute("CREATE TABLE t(x INTEGER)")
        for i in range(3000):  # tiny timeouts: some exits stop waiting before the rollback
            try:
                async with adb.writer(timeout=0.0003 if i % 2 else 0.001) as w:
                    await w.execute("INSERT INTO t VALUES (?)", (i,))
                    raise Boom
            except (Boom, RequestTimeout):
                pass
        await adb.flush()  # every block's answer has arrived
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    assert not [m for m in logged if "never retrieved" in m], logged
