"""The asyncio form of a write block: ``async with adb.writer() as w:``.

::

    async with adb.writer() as w:
        stock = (await w.execute("SELECT stock FROM items WHERE id = ?", (7,))).scalar()
        await w.execute("UPDATE items SET stock = ? WHERE id = ?", (stock - 1, 7))
    # committed here

The same block as :meth:`Gateway.writer() <sqlite_gateway.Gateway.writer>`
(one request, in the batch it joins, committed with it, the same hold limit),
waited for without blocking the event loop:

- entering awaits the writer (no thread is parked: the writer wakes the loop);
- each statement on ``w`` runs in the loop's default executor (one thread
  hand-off each way, tens of microseconds), so a slow statement never blocks
  the loop; statements of one block run one at a time (awaiting two at once
  is refused);
- leaving awaits the COMMIT (or the rollback, when the body raised).

A task that holds a block and awaits another call on the same gateway waits
for its own block until the hold limit rolls the block back: do everything
inside the block on ``w``. Cancelling the task while it waits for the writer
means the block never runs; cancelling it inside the block rolls it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal

from ..arguments import Params
from ..result import Result
from ..writeblock import WriteBlock


class AsyncWriteBlock:
    """``async with`` around a :class:`~sqlite_gateway.WriteBlock`; made by
    ``AsyncGateway.writer()``. Use it on one event loop, inside its block."""

    __slots__ = ("_block",)

    def __init__(self, block: WriteBlock) -> None:
        self._block = block

    async def __aenter__(self) -> AsyncWriteBlock:
        """Await the writer; raises as ``WriteBlock.__enter__``."""
        block = self._block
        loop = asyncio.get_running_loop()
        signal: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not signal.done():
                signal.set_result(None)

        def wake(*_: object) -> None:  # on the writer's (or an answering) thread
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(settle)

        block.on_held = wake
        future = block._begin(None)
        future.add_done_callback(wake)
        try:
            await asyncio.wait({signal}, timeout=block._timeout)
        except BaseException:  # cancelled while waiting: the block never holds the writer
            block._abandon()
            raise
        block._entered()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Literal[False]:
        """Await the COMMIT (or the rollback); raises as ``WriteBlock.__exit__``."""
        block = self._block
        future: Future[Any] = block._leave(exc is not None)
        waiter = asyncio.wrap_future(future)
        # Read here if this wait times out or is cancelled: the outcome is read
        # from future, and an unread waiter makes asyncio log "never retrieved".
        waiter.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({waiter}, timeout=block._timeout)
        if done:
            waiter.exception()  # retrieved: the outcome is read from future below
        return block._outcome(bool(done), exc)

    async def execute(self, sql: str, params: Params = ()) -> Result:
        """Run ``sql`` inside the block, in an executor thread (see ``WriteBlock.execute``)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._block.execute, sql, params)

    async def executemany(self, sql: str, seq_of_params: Sequence[Params]) -> Result:
        """One statement per parameter set inside the block, in an executor thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._block.executemany, sql, seq_of_params)

    def savepoint(self) -> AsyncSavepoint:
        """A nested unit (``async with w.savepoint():``) that rolls back alone;
        see ``Connection.savepoint``. Its statements run in an executor thread."""
        return AsyncSavepoint(self._block)

    @property
    def held(self) -> bool:
        """True while the block holds the writer."""
        return self._block.held

    def __repr__(self) -> str:
        return f"<AsyncWriteBlock {self._block!r}>"


def _retrieve(waiter: asyncio.Future[Any]) -> None:
    if not waiter.cancelled():
        waiter.exception()


class AsyncSavepoint:
    """``async with w.savepoint():`` in an :class:`AsyncWriteBlock`."""

    __slots__ = ("_block", "_unit")

    def __init__(self, block: WriteBlock) -> None:
        self._block = block
        self._unit: Any = None

    async def __aenter__(self) -> AsyncSavepoint:
        loop = asyncio.get_running_loop()

        def enter() -> Any:
            return self._block.savepoint().__enter__()

        self._unit = await loop.run_in_executor(None, enter)
        return self

    async def rollback(self) -> None:
        """Undo the unit's writes so far; it stays open."""
        await asyncio.get_running_loop().run_in_executor(None, self._unit.rollback)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Literal[False]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._unit.__exit__, exc_type, exc, tb)
        return False
