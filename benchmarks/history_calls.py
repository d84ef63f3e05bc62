"""The history checker's operation vocabulary: one caller's calls through every door.

A :class:`Caller` is one thread's calls on the gateway (execute, a
multi-statement execute, executemany, transaction, submit, submit_transaction,
post, flush, bulk, a read-your-writes check, a write block, a transaction fn
with savepoints, a snapshot's consistency and read-your-writes check); an
:class:`AsyncCaller` is one asyncio task's calls on an ``AsyncGateway``, some
of them cancelled mid-flight.
Each call writes rows with ids unique to it (op * 64 + part), records an intent
before it and its outcome after the answer, judged by
:func:`benchmarks.history_check.classify` from the answer alone.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent import futures
from typing import TYPE_CHECKING, Any

from sqlite_gateway import GatewayClosed
from sqlite_gateway.integrations.asyncio import AsyncGateway

from . import history_check as hc

if TYPE_CHECKING:
    from .history_run import Run

ROWS_PER_OP = 64  # row ids are op * 64 + part
LONG = 10.0  # a call's timeout when no deadline fault is drawn
HANG_TIMEOUT = 0.25  # the watchdog's hang_timeout in histories with a hang fault
ANSWER_BOUND = 60.0  # no answer after this long: a hang (a violation)


class Caller:
    """One thread's (or task's) calls: the operation vocabulary and its bookkeeping."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.db = run.db
        self.rec = run.rec
        self.rng = random.Random(run.profile.seed * 1000 + index)
        self.next_op = (index + 1) * 10**6
        self.posts: list[int] = []  # posted ops not yet covered by a flush
        self.acked: list[int] = []  # recent acknowledged row ids (read-your-writes)
        self.closed = 0  # GatewayClosed answers seen: the thread winds down

    def new_op(self, door: str, nrows: int, counter: bool = False, never: int = 0
               ) -> tuple[int, list[int], tuple[int, int] | None]:
        """A new op id, its row ids and counter increment, its intent recorded.
        ``never``: that many more ids (``never_rows``) go to a savepoint whose
        body raises; they must never be in the file."""
        op, self.next_op = self.next_op, self.next_op + 1
        rows = [op * ROWS_PER_OP + part for part in range(nrows)]
        ctr = (self.rng.randrange(3), self.rng.randint(1, 9)) if counter else None
        self.rec.intent(op, door, rows, ctr, never_rows(op, never))
        return op, rows, ctr

    def timeout(self) -> float:
        """A tight deadline now and then (the deadline fault), else a long one."""
        if self.rng.random() < self.run.profile.deadline_p:
            self.rec.faults["deadline"] += 1
            # Up to about one COMMIT's length: many deadlines pass while the
            # call runs, some of them inside the COMMIT's sync.
            return self.rng.uniform(0.0, max(0.002, 2 * self.run.profile.sync_delay))
        return LONG

    def priority(self) -> str:
        return "background" if self.rng.random() < 0.2 else "interactive"

    def classify(self, exc: BaseException) -> tuple[str, str]:
        return hc.classify(exc, self.run.interrupted)

    def judge(self, op: int, rows: list[int], outcome: str, why: str,
              exc: BaseException | None = None) -> None:
        self.rec.outcome(op, outcome, why, exc=exc)
        if outcome == hc.ACK:
            self.acked = (self.acked + rows)[-6:]
        if why.startswith("closed"):
            self.closed += 1
        if why.startswith("unexpected"):
            self.rec.violation("unexpected-error", op, why)

    def call(self, op: int, rows: list[int], thunk: Any) -> None:
        """Run ``thunk()`` and record its outcome, judged by the answer alone."""
        try:
            thunk()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # every answer is recorded, including CancelledError
            self.judge(op, rows, *self.classify(exc), exc)
            return
        self.judge(op, rows, hc.ACK, "returned")

    # -- the doors (threads) --------------------------------------------------

    def execute(self) -> None:
        op, rows, _ = self.new_op("execute", 1)
        self.call(op, rows, lambda: self.db.execute(
            "INSERT INTO rows VALUES (?, ?)", (rows[0], op),
            timeout=self.timeout(), priority=self.priority()))

    def execute_script(self) -> None:
        op, rows, ctr = self.new_op("execute-script", 2, counter=True)
        assert ctr is not None
        params = {"a": rows[0], "b": rows[1], "op": op, "k": ctr[0], "inc": ctr[1]}
        self.call(op, rows, lambda: self.db.execute(
            "INSERT INTO rows VALUES (:a, :op); INSERT INTO rows VALUES (:b, :op);"
            " UPDATE counters SET n = n + :inc WHERE k = :k", params,
            timeout=self.timeout(), priority=self.priority()))

    def executemany(self) -> None:
        op, rows, _ = self.new_op("executemany", 3)
        self.call(op, rows, lambda: self.db.executemany(
            "INSERT INTO rows VALUES (?, ?)", [(r, op) for r in rows],
            timeout=self.timeout(), priority=self.priority()))

    def transaction(self) -> None:
        op, rows, ctr = self.new_op("transaction", self.rng.randint(2, 4), counter=True)
        mode = self.run.fn_mode(self.rng)
        self.call(op, rows, lambda: self.db.transaction(
            txn_fn, rows, op, ctr, mode, self.run.hung,
            timeout=self.timeout(), priority=self.priority()))

    def submit(self) -> None:
        op, rows, _ = self.new_op("submit", 1)
        self.call(op, rows, lambda: wait_future(self.db.submit(
            "INSERT INTO rows VALUES (?, ?)", (rows[0], op), priority=self.priority()),
            self.timeout()))

    def submit_transaction(self) -> None:
        op, rows, ctr = self.new_op("submit-transaction", self.rng.randint(2, 4), counter=True)
        mode = self.run.fn_mode(self.rng)
        self.call(op, rows, lambda: wait_future(self.db.submit_transaction(
            txn_fn, rows, op, ctr, mode, self.run.hung, priority=self.priority()),
            self.timeout()))

    def post(self) -> None:
        op, rows, _ = self.new_op("post", 1)
        try:
            self.db.post("INSERT INTO rows VALUES (?, ?)", (rows[0], op),
                         priority=self.priority())
        except BaseException as exc:
            self.judge(op, rows, *self.classify(exc), exc)
            return
        self.posts.append(op)
        self.judge(op, rows, hc.MAY, "posted")  # until a flush covers it

    def flush(self) -> None:
        try:
            self.db.flush(timeout=self.timeout())
        except GatewayClosed:
            self.closed += 1
            return
        except BaseException:
            return  # a flush that failed tells nothing about the posts before it
        with self.rec.lock:  # take the failures and judge the posts as one step
            for failure in self.db.failures():
                self.rec.post_failed[failure.params[1]] = failure.error
            for op in self.posts:
                error = self.rec.post_failed.get(op)
                if error is None:
                    self.rec.outcome(op, hc.ACK, "post-flushed")
                else:
                    outcome, why = self.classify(error)
                    self.rec.outcome(op, outcome, f"post-failed-{why}", exc=error)
        self.posts = []

    def bulk(self) -> None:
        op, rows, _ = self.new_op("bulk", self.rng.randint(8, 60))
        try:
            self.db.bulk("INSERT INTO rows VALUES (?, ?)", [(r, op) for r in rows],
                         timeout=self.timeout())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self.bulk_failed(op, exc)
            return
        self.rec.outcome(op, hc.ACK, "returned", len(rows))

    def bulk_failed(self, op: int, exc: BaseException) -> None:
        """Record a bulk() that raised: its note says how many rows are committed."""
        acked, outcome, why = hc.classify_bulk(exc, self.run.interrupted)
        self.rec.outcome(op, outcome, why, acked, exc)
        self.closed += isinstance(exc, GatewayClosed)

    def write_block(self) -> None:
        """``with db.writer() as w:`` writing rows and a counter; sometimes a savepoint
        that raises, a body that raises, or a hold past ``hold_limit``."""
        doomed = self.rng.random() < 0.3
        op, rows, ctr = self.new_op("write-block", self.rng.randint(2, 4), counter=True,
                                    never=2 if doomed else 0)
        assert ctr is not None
        mode = self.run.block_mode(self.rng)
        sleep = self.run.db_hold_limit() * 1.5 + 0.01

        def body() -> None:
            with self.db.writer(timeout=self.timeout(), priority=self.priority()) as w:
                w.executemany("INSERT INTO rows VALUES (?, ?)", [(r, op) for r in rows[:-1]])
                if doomed:
                    try:
                        with w.savepoint():
                            w.executemany("INSERT INTO rows VALUES (?, ?)",
                                          [(r, op) for r in never_rows(op, 2)])
                            raise hc.Boom("the savepoint's body failed after its writes")
                    except hc.Boom:
                        pass
                w.execute("INSERT INTO rows VALUES (?, ?)", (rows[-1], op))
                w.execute("UPDATE counters SET n = n + ? WHERE k = ?", (ctr[1], ctr[0]))
                if mode.startswith("expire"):
                    time.sleep(sleep)  # past hold_limit: the block is rolled back
                    if mode == "expire":
                        w.execute("SELECT 1")  # raises WriteBlockExpired
                elif mode == "boom":
                    raise hc.Boom("the write block's body failed after its writes")

        self.call(op, rows, body)

    def savepoint_transaction(self) -> None:
        """A transaction fn with a savepoint that raises after its writes (caught by
        the fn, which goes on) and one that succeeds."""
        op, rows, ctr = self.new_op("savepoint-transaction", self.rng.randint(2, 4),
                                    counter=True, never=2)
        mode = self.run.fn_mode(self.rng)
        self.call(op, rows, lambda: self.db.transaction(
            savepoint_fn, rows, op, ctr, mode, self.run.hung,
            timeout=self.timeout(), priority=self.priority()))

    def snapshot(self) -> None:
        """Two reads in one snapshot agree, and it sees this thread's acknowledged rows."""
        if not self.run.has_reader_pool():
            return
        ids = list(self.acked)
        marks = ", ".join("?" * len(ids)) or "NULL"
        view = ("SELECT (SELECT group_concat(n) FROM counters),"
                " (SELECT count(*) FROM rows), (SELECT max(id) FROM rows)")
        try:
            with self.db.snapshot(timeout=LONG) as s:
                first = s.execute(view).rows
                seen = s.execute(f"SELECT count(*) FROM rows WHERE id IN ({marks})",
                                 ids).scalar()
                time.sleep(0.001)  # room for other callers' commits between the reads
                second = s.execute(view).rows
        except GatewayClosed:
            self.closed += 1
            return
        except Exception:
            return  # a failed snapshot has nothing of its own to check
        if first != second:
            self.rec.violation("snapshot-inconsistent", None,
                               f"two reads of one snapshot differ: {first} then {second}")
        if seen != len(ids):
            self.rec.violation("snapshot-stale", None,
                               f"snapshot saw {seen} of acknowledged rows {ids}")

    def read(self) -> None:
        """Read-your-writes: rows this caller was told are committed are visible."""
        ids = list(self.acked)
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        try:
            seen = self.db.execute(f"SELECT count(*) FROM rows WHERE id IN ({marks})", ids,
                                   timeout=LONG).scalar()
        except BaseException:
            return
        if seen != len(ids):
            self.rec.violation("stale-read", None, f"{seen} of acknowledged rows {ids}")

    DOORS = ("execute", "execute_script", "executemany", "transaction", "submit",
             "submit_transaction", "post", "flush", "bulk", "read", "write_block",
             "savepoint_transaction", "snapshot")

    def loop(self) -> None:
        """Random calls until the history ends or the gateway refuses every call."""
        for _ in range(100_000):
            if self.run.stop.is_set() or self.closed >= 3:
                break
            getattr(self, self.rng.choice(self.run.doors))()
        if self.posts:
            self.flush()


def txn_fn(conn: Any, rows: list[int], op: int, ctr: tuple[int, int], mode: str,
           hung: threading.Event) -> int:
    """The transaction fn: several rows and a counter increment, atomically.

    ``mode`` "boom" raises at the end (nothing may be kept); "hang" sleeps past
    the watchdog's give-up (``hang_timeout`` plus its grace); "slow" sleeps a little.
    """
    for r in rows:
        conn.execute("INSERT INTO rows VALUES (?, ?)", (r, op))
    conn.execute("UPDATE counters SET n = n + ? WHERE k = ?", (ctr[1], ctr[0]))
    if mode == "slow":
        time.sleep(0.002)
    elif mode == "hang":
        try:
            time.sleep(4 * HANG_TIMEOUT + 1.0)
        finally:
            hung.set()
    elif mode == "boom":
        raise hc.Boom("the fn failed after its writes")
    return op


def never_rows(op: int, n: int) -> list[int]:
    """Row ids of ``op`` written only inside a savepoint that raises (the top of its range)."""
    return [op * ROWS_PER_OP + ROWS_PER_OP - 1 - i for i in range(n)]


def savepoint_fn(conn: Any, rows: list[int], op: int, ctr: tuple[int, int], mode: str,
                 hung: threading.Event) -> int:
    """A transaction fn with savepoints: ``rows[0]`` in a unit that succeeds, two
    :func:`never_rows` in one whose body raises (the fn catches it and goes on),
    the rest as :func:`txn_fn` (``mode`` included)."""
    with conn.savepoint():
        conn.execute("INSERT INTO rows VALUES (?, ?)", (rows[0], op))
    try:
        with conn.savepoint():
            for r in never_rows(op, 2):
                conn.execute("INSERT INTO rows VALUES (?, ?)", (r, op))
            raise hc.Boom("the savepoint's body failed after its writes")
    except hc.Boom:
        pass
    return txn_fn(conn, rows[1:], op, ctr, mode, hung)


def wait_future(future: Any, timeout: float) -> Any:
    """Wait for a submit future as a caller would: give up at ``timeout``, then cancel.

    A cancel that succeeds means the request never runs (its documented
    contract); one that fails leaves a started request: wait for its answer.
    """
    try:
        return future.result(timeout)
    except futures.TimeoutError:
        if future.cancel():
            raise hc.Withdrawn() from None
        return future.result(ANSWER_BOUND)


class AsyncCaller(Caller):
    """One asyncio task's calls, through AsyncGateway; some are cancelled mid-flight."""

    def __init__(self, run: Run, index: int, adb: AsyncGateway) -> None:
        super().__init__(run, index)
        self.adb = adb

    async def acall(self, op: int, rows: list[int], coro: Any) -> None:
        """Await ``coro`` (or cancel it after a random moment: the cancel fault)."""
        task = asyncio.ensure_future(coro)
        if "cancel" in self.run.profile.faults and self.rng.random() < 0.3:
            await asyncio.sleep(self.rng.uniform(0.0, 0.01))
            if task.cancel():
                self.rec.faults["cancel"] += 1
        try:
            await task
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self.judge(op, rows, *self.classify(exc), exc)
            return
        self.judge(op, rows, hc.ACK, "returned")

    async def aloop(self) -> None:
        adb, prio = self.adb, self.priority
        for _ in range(100_000):
            if self.run.stop.is_set() or self.closed >= 3:
                return
            door = self.rng.choice(("execute", "transaction", "executemany", "submit",
                                    "bulk", "flush", "writer"))
            if door == "execute":
                op, rows, _ = self.new_op("async-execute", 1)
                await self.acall(op, rows, adb.execute(
                    "INSERT INTO rows VALUES (?, ?)", (rows[0], op),
                    timeout=self.timeout(), priority=prio()))
            elif door == "transaction":
                op, rows, ctr = self.new_op("async-transaction", 3, counter=True)
                await self.acall(op, rows, adb.transaction(
                    txn_fn, rows, op, ctr, self.run.fn_mode(self.rng), self.run.hung,
                    timeout=self.timeout(), priority=prio()))
            elif door == "executemany":
                op, rows, _ = self.new_op("async-executemany", 3)
                await self.acall(op, rows, adb.executemany(
                    "INSERT INTO rows VALUES (?, ?)", [(r, op) for r in rows],
                    timeout=self.timeout(), priority=prio()))
            elif door == "submit":
                op, rows, _ = self.new_op("async-submit", 1)
                try:
                    fut = adb.submit("INSERT INTO rows VALUES (?, ?)", (rows[0], op),
                                     priority=prio())
                except BaseException as exc:
                    self.judge(op, rows, *self.classify(exc), exc)
                    continue
                await self.acall(op, rows, _await(fut))
            elif door == "bulk":
                await self.abulk()
            elif door == "writer":
                await self.ablock()
            else:
                try:
                    await adb.flush(timeout=self.timeout())
                except GatewayClosed:
                    self.closed += 1
                except Exception:
                    pass  # a flush has nothing of its own to check

    async def abulk(self) -> None:
        op, rows, _ = self.new_op("async-bulk", self.rng.randint(8, 60))
        task = asyncio.ensure_future(self.adb.bulk(
            "INSERT INTO rows VALUES (?, ?)", [(r, op) for r in rows], timeout=self.timeout()))
        if "cancel" in self.run.profile.faults and self.rng.random() < 0.3:
            await asyncio.sleep(self.rng.uniform(0.0, 0.01))
            if task.cancel():
                self.rec.faults["cancel"] += 1
        try:
            await task
        except BaseException as exc:
            self.bulk_failed(op, exc)
            return
        self.rec.outcome(op, hc.ACK, "returned", len(rows))


    async def ablock(self) -> None:
        """``async with adb.writer() as w:`` as :meth:`Caller.write_block`."""
        op, rows, ctr = self.new_op("async-write-block", 3, counter=True)
        assert ctr is not None
        mode = self.run.block_mode(self.rng)
        sleep = self.run.db_hold_limit() * 1.5 + 0.01
        timeout, prio = self.timeout(), self.priority()

        async def body() -> None:
            async with self.adb.writer(timeout=timeout, priority=prio) as w:
                await w.executemany("INSERT INTO rows VALUES (?, ?)",
                                    [(r, op) for r in rows[:-1]])
                await w.execute("INSERT INTO rows VALUES (?, ?)", (rows[-1], op))
                await w.execute("UPDATE counters SET n = n + ? WHERE k = ?", (ctr[1], ctr[0]))
                if mode.startswith("expire"):
                    await asyncio.sleep(sleep)
                    if mode == "expire":
                        await w.execute("SELECT 1")
                elif mode == "boom":
                    raise hc.Boom("the write block's body failed after its writes")

        await self.acall(op, rows, body())


async def _await(fut: Any) -> Any:
    return await fut
