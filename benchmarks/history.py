"""Randomized history checker: many callers, random faults, then the file must agree.

In the spirit of Jepsen and of SQLite's own fault-injection tests. Each history:

1. picks a profile from its seed (threads, asyncio tasks, ``inline``, ``readers``,
   ``read_mode``, ``synchronous``, a sync delay) and the faults it will inject;
2. runs threads (and an asyncio task group over
   :class:`~sqlite_gateway.integrations.asyncio.AsyncGateway`) that call every door
   (execute, a multi-statement execute, executemany, transaction, submit,
   submit_transaction, post, bulk, flush, reads) with random priorities and
   deadlines, while a scheduler injects faults (I/O errors and slow syncs from
   :mod:`benchmarks.faultshim`, a fn that hangs past ``hang_timeout``, worker
   death, ``close()``, asyncio cancellation; ``kill -9`` of a child process that
   runs the whole history);
3. records every call: an intent line before it, an outcome line after the
   caller got its answer (:class:`Recorder`, fsync'd appends, so a killed
   child's log survives), the outcome judged by :func:`history_check.classify`
   from the answer alone;
4. reads the final file in a fresh gateway and checks it
   (:func:`history_check.check`).

Run from the repository root::

    .venv/bin/python -m benchmarks.history --histories 200 --seed 1
    .venv/bin/python -m benchmarks.history --histories 1 --seed 57   # replay one

History ``i`` of a run uses seed ``S + i``; a violation prints that seed.
The same seed replays the same profile, faults and operation choices; thread
interleavings differ from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent import futures
from typing import Any

from sqlite_gateway import Gateway, GatewayClosed
from sqlite_gateway.integrations.asyncio import AsyncGateway

from . import history_check as hc
from .faultshim import shim

SCHEMA = ("CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, op INTEGER NOT NULL);"
          "CREATE TABLE IF NOT EXISTS counters(k INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
          "INSERT OR IGNORE INTO counters VALUES (0, 0), (1, 0), (2, 0)")
FAULT_KINDS = ("deadline", "slow-sync", "io", "hang", "death", "close", "cancel", "kill")
ROWS_PER_OP = 64  # row ids are op * 64 + part
LONG = 10.0  # a call's timeout when no deadline fault is drawn
HANG_TIMEOUT = 0.25  # the watchdog's hang_timeout in histories with a hang fault
ANSWER_BOUND = 60.0  # no answer after this long: a hang (a violation)


class Recorder:
    """Appends one JSON line per event to the history's log, each fsync'd.

    Thread-safe (one ``os.write`` per line on an O_APPEND descriptor). An
    outcome is written only after the caller received its answer.
    ``lock`` serialises taking post failures with judging posts.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lock = threading.Lock()
        self.post_failed: dict[int, BaseException] = {}  # posted op -> its failure
        self.faults: Counter[str] = Counter()

    def write(self, **entry: Any) -> None:
        os.write(self._fd, (json.dumps(entry) + "\n").encode())
        os.fsync(self._fd)

    def intent(self, op: int, door: str, rows: list[int], ctr: tuple[int, int] | None) -> None:
        self.write(e="intent", op=op, door=door, rows=rows, ctr=ctr)

    def outcome(self, op: int, outcome: str, why: str, acked: int = 0,
                exc: BaseException | None = None) -> None:
        detail = None if exc is None else hc.describe(exc)
        self.write(e="out", op=op, o=outcome, why=why, n=acked, exc=detail)

    def fault(self, kind: str) -> None:
        self.faults[kind] += 1
        self.write(e="fault", kind=kind)

    def violation(self, kind: str, op: int | None, detail: str) -> None:
        self.write(e="violation", kind=kind, op=op, detail=detail)

    def close(self) -> None:
        os.close(self._fd)


@dataclasses.dataclass
class Profile:
    """One history's shape, drawn from its seed (see :func:`draw_profile`)."""

    seed: int
    threads: int
    tasks: int  # asyncio tasks (0: no event loop)
    inline: bool
    readers: int  # -1: the gateway's default
    read_mode: str
    synchronous: str
    sync_delay: float
    deadline_p: float  # share of calls given a tight deadline
    faults: list[str]
    duration: float

    def door_path(self, op: int | None) -> str:
        """"async" for an asyncio task's op, "threads" for a thread's (from the op id)."""
        if op is None:
            return "-"
        return "async" if op >= 101 * 10**6 else "threads"

    def options(self) -> dict[str, Any]:
        hang = "hang" in self.faults
        readers = {} if self.readers < 0 else {"readers": self.readers}  # -1: the default
        return dict(inline=self.inline, **readers, read_mode=self.read_mode,
                    synchronous=self.synchronous, vfs=shim().name, timeout=LONG,
                    busy_timeout=0.2 if hang else 1.0,
                    hang_timeout=HANG_TIMEOUT if hang else 30.0)


def draw_profile(seed: int, allowed: tuple[str, ...] = FAULT_KINDS,
                 threads: int | None = None, inline: bool | None = None,
                 tasks: int | None = None, every: bool = False,
                 duration: float | None = None) -> Profile:
    """A random profile; ``allowed`` limits the fault kinds (``every``: all of them
    in every history), the others fix a field."""
    rng = random.Random(seed)
    faults = [k for k in FAULT_KINDS if (rng.random() < 0.3 or every) and k in allowed]
    if "slow-sync" in faults or "deadline" in faults:
        synchronous = "FULL"  # a COMMIT syncs the WAL only at FULL: the deadline lands there
    else:
        synchronous = rng.choice(("FULL", "NORMAL"))
    return Profile(
        seed=seed, threads=_fixed(threads, rng.choice((1, 1, 2, 3, 6))),
        tasks=_fixed(tasks, rng.choice((0, 0, 3))),
        inline=_fixed(inline, rng.random() < 0.7),
        readers=rng.choice((0, -1)), read_mode=rng.choice(("inline", "threads")),
        synchronous=synchronous,
        sync_delay=rng.choice((0.001, 0.003, 0.006)) if "slow-sync" in faults else 0.0,
        deadline_p=rng.choice((0.2, 0.5, 0.9)) if "deadline" in faults else 0.0,
        faults=faults, duration=_fixed(duration, rng.uniform(0.3, 1.0)))


def _fixed(given: Any, drawn: Any) -> Any:
    """``given`` unless None; the draw is made either way, so fixing one field
    leaves every other draw of the seed as it was."""
    return drawn if given is None else given


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

    def new_op(self, door: str, nrows: int, counter: bool = False) -> tuple[int, list[int],
                                                                          tuple[int, int] | None]:
        op, self.next_op = self.next_op, self.next_op + 1
        rows = [op * ROWS_PER_OP + part for part in range(nrows)]
        ctr = (self.rng.randrange(3), self.rng.randint(1, 9)) if counter else None
        self.rec.intent(op, door, rows, ctr)
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
            acked, outcome, why = hc.classify_bulk(exc, self.run.interrupted)
            self.rec.outcome(op, outcome, why, acked, exc)
            self.closed += isinstance(exc, GatewayClosed)
            return
        self.rec.outcome(op, hc.ACK, "returned", len(rows))

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
             "submit_transaction", "post", "flush", "bulk", "read")

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
                                    "bulk", "flush"))
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
            acked, outcome, why = hc.classify_bulk(exc, self.run.interrupted)
            self.rec.outcome(op, outcome, why, acked, exc)
            self.closed += isinstance(exc, GatewayClosed)
            return
        self.rec.outcome(op, hc.ACK, "returned", len(rows))


async def _await(fut: Any) -> Any:
    return await fut


class Run:
    """One history being run: the gateway, its callers and the fault scheduler."""

    def __init__(self, profile: Profile, path: str, log_path: str,
                 doors: tuple[str, ...] = Caller.DOORS, interrupted: str = hc.NOT) -> None:
        self.profile = profile
        self.doors = doors  # the threads' doors (the asyncio tasks use all of theirs)
        self.interrupted = interrupted  # what RequestTimeout(interrupted=True) means
        self.path = path
        self.rec = Recorder(log_path)
        self.stop = threading.Event()
        self.hung = threading.Event()  # set when a hanging fn has returned
        self._hang_lock = threading.Lock()
        self._hang_armed = False
        self.db = Gateway(path, **profile.options())

    def fn_mode(self, rng: random.Random) -> str:
        """How the next transaction fn behaves: "hang" once when the scheduler armed it."""
        with self._hang_lock:
            if self._hang_armed:
                self._hang_armed = False
                self.rec.fault("hang")
                return "hang"
        roll = rng.random()
        return "boom" if roll < 0.1 else "slow" if roll < 0.2 else "plain"

    def schedule(self) -> None:
        """The fault scheduler: inject this history's faults at random moments."""
        profile = self.profile
        rng = random.Random(profile.seed * 7 + 3)
        switches = shim().switches
        events = []
        for kind in profile.faults:
            if kind in ("io", "death", "close", "hang"):
                count = rng.randint(1, 3) if kind == "io" else 1
                events += [(rng.uniform(0.05, profile.duration), kind) for _ in range(count)]
        began = time.monotonic()
        for at, kind in sorted(events):
            if self.stop.wait(max(0.0, began + at - time.monotonic())):
                return
            if kind == "io":
                op = rng.choice(("reads", "writes", "syncs"))
                switches.arm(**{op: rng.randint(1, 3)})
            elif kind == "death":
                switches.refuse_opens = True  # the reopen after the I/O error fails
                switches.arm(writes=1, syncs=1)
            elif kind == "close":
                threading.Thread(target=self.db.close, args=(rng.uniform(0.0, 0.5),),
                                 daemon=True).start()
            elif kind == "hang":
                with self._hang_lock:
                    self._hang_armed = True
                continue  # counted when a fn takes it
            self.rec.fault(kind)

    def play(self, started: Any = None) -> None:
        """Run the callers and the scheduler for the profile's duration; close the gateway.

        ``started()``, if given, is called once the callers run (the kill -9 form
        tells its parent so).
        """
        profile = self.profile
        switches = shim().switches
        switches.reset()
        self.db.start()
        self.db.execute(SCHEMA)
        switches.sync_delay = profile.sync_delay
        if profile.sync_delay:
            self.rec.fault("slow-sync")
        threads = [threading.Thread(target=Caller(self, i).loop, daemon=True)
                   for i in range(profile.threads)]
        if profile.tasks:
            threads.append(threading.Thread(target=asyncio.run, args=(self._tasks(),),
                                            daemon=True))
        threads.append(threading.Thread(target=self.schedule, daemon=True))
        for t in threads:
            t.start()
        if started is not None:
            started()
        self.stop.wait(profile.duration)
        self.stop.set()
        for t in threads:
            t.join(ANSWER_BOUND)
            if t.is_alive():
                self.rec.violation("no-answer", None, f"{t.name} still waiting after "
                                   f"{ANSWER_BOUND:g} s")
        self.db.close(timeout=ANSWER_BOUND)
        if self.rec.faults["hang"]:
            self.hung.wait(ANSWER_BOUND)  # the stuck fn returns; its thread lets go
        switches.reset()

    async def _tasks(self) -> None:
        adb = AsyncGateway(self.db)
        callers = [AsyncCaller(self, 100 + i, adb) for i in range(self.profile.tasks)]
        await asyncio.gather(*(c.aloop() for c in callers))


# -- the final look, the kill -9 form, the campaign ---------------------------------


def read_file(path: str) -> tuple[dict[int, int], dict[int, int], str]:
    """(row id -> op, counter -> value, integrity_check) read by a fresh gateway."""
    with Gateway(path, readers=0, inline=False, timeout=ANSWER_BOUND) as db:
        integrity = "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check").rows)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema").rows}
        if "rows" not in tables:
            return {}, {}, integrity
        present = dict(db.execute("SELECT id, op FROM rows").rows)
        counters = dict(db.execute("SELECT k, n FROM counters").rows)
    return present, counters, integrity


@dataclasses.dataclass
class Outcome:
    """What one history came to."""

    profile: Profile
    ops: int
    outcomes: Counter[str]
    faults: Counter[str]
    violations: list[hc.Violation]
    may_there: Counter[str]
    excerpt: list[str]


def verify(profile: Profile, path: str, log_path: str, faults: Counter[str]) -> Outcome:
    """Check the file against the log; an excerpt of the log around each violation."""
    with open(log_path, "rb") as f:
        lines = [json.loads(line) for line in f.read().split(b"\n") if line.strip()]
    ops, found = hc.load(e for e in lines)
    present, counters, integrity = read_file(path)
    violations, may_there = hc.check(ops, present, counters, integrity)
    violations = found + violations
    excerpt: list[str] = []
    for v in violations[:3]:
        around = [_short(e) for e in lines if e.get("op") == v.op] if v.op else []
        excerpt.append(f"{v.kind} op {v.op}: {v.detail}")
        excerpt += ["    " + a for a in around[:4]]
    outcomes = Counter(op.outcome or "none" for op in ops.values())
    return Outcome(profile, len(ops), outcomes, faults, violations, may_there, excerpt)


def _short(entry: dict[str, Any]) -> str:
    """A log line for an excerpt, its row list cut short."""
    rows = entry.get("rows")
    if rows and len(rows) > 3:
        entry = {**entry, "rows": f"{rows[:3]} +{len(rows) - 3}"}
    return json.dumps(entry)


def run_history(profile: Profile, workdir: str, doors: tuple[str, ...] = Caller.DOORS,
                interrupted: str = hc.NOT) -> Outcome:
    """Run one history (in this process, or in a child killed with SIGKILL) and check it."""
    path = os.path.join(workdir, f"h{profile.seed}.db")
    log_path = path + ".log"
    faults: Counter[str] = Counter()
    if "kill" in profile.faults:
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.history", "--child",
                                  path, log_path, json.dumps(dataclasses.asdict(profile)),
                                  "--doors", ",".join(doors), "--interrupted", interrupted],
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(
                                     __file__))), stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            child.stdout.readline()  # "running" (or "" if it died first: then no kill)
            child.wait(random.Random(profile.seed).uniform(0.0, profile.duration))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            faults["kill"] += 1
        finally:
            child.wait(ANSWER_BOUND)
            child.stdout.close()  # type: ignore[union-attr]
        with open(log_path, "rb") as f:
            faults.update(json.loads(line)["kind"] for line in f.read().split(b"\n")
                          if b'"e": "fault"' in line)
    else:
        run = Run(profile, path, log_path, doors, interrupted)
        try:
            run.play()
        finally:
            run.rec.close()
        faults = run.rec.faults
    outcome = verify(profile, path, log_path, faults)
    for suffix in ("", "-wal", "-shm", ".log"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return outcome


@dataclasses.dataclass
class Campaign:
    """Figures over many histories."""

    histories: int = 0
    ops: int = 0
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    faults: Counter[str] = dataclasses.field(default_factory=Counter)
    may_there: Counter[str] = dataclasses.field(default_factory=Counter)
    failed: list[Outcome] = dataclasses.field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.histories += 1
        self.ops += outcome.ops
        self.outcomes.update(outcome.outcomes)
        self.faults.update({k: v for k, v in outcome.faults.items() if v})
        self.may_there.update(outcome.may_there)
        if outcome.violations:
            self.failed.append(outcome)


def campaign(histories: int, seed: int, allowed: tuple[str, ...] = FAULT_KINDS,
             threads: int | None = None, inline: bool | None = None,
             tasks: int | None = None, every: bool = False,
             duration: float | None = None, doors: tuple[str, ...] = Caller.DOORS,
             interrupted: str = hc.NOT, progress: bool = False) -> Campaign:
    """Run histories with seeds ``seed .. seed + histories - 1``; return the figures."""
    shim()  # registered before any gateway names it
    result = Campaign()
    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="sqlite-gateway-history-", dir=root)
    try:
        for i in range(histories):
            profile = draw_profile(seed + i, allowed, threads, inline, tasks, every, duration)
            outcome = run_history(profile, workdir, doors, interrupted)
            result.add(outcome)
            if progress and (outcome.violations or (i + 1) % 10 == 0):
                print(f"history {i + 1}/{histories} (seed {profile.seed}): {outcome.ops} ops, "
                      f"{len(outcome.violations)} violations", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def report(result: Campaign, command: str) -> str:
    """The long form's printout: what ran, what was found (each with its seed)."""
    by_outcome = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    lines = [f"command: {command}",
             f"load average (1 min): {os.getloadavg()[0]:.2f}",
             f"histories checked: {result.histories}",
             f"operations: {result.ops} ({by_outcome})",
             "faults injected: " + (", ".join(f"{k} {result.faults[k]}" for k in FAULT_KINDS
                                               if result.faults[k]) or "none"),
             "'may' outcomes found committed: " + (", ".join(
                 f"{k} {v}" for k, v in sorted(result.may_there.items())) or "none"),
             f"violations: {sum(len(o.violations) for o in result.failed)} in "
             f"{len(result.failed)} histories"]
    labels = Counter(f"{v.kind} (answer: {v.why or '-'}; caller: {o.profile.door_path(v.op)})"
                     for o in result.failed for v in o.violations)
    lines += [f"  {n} {label}" for label, n in sorted(labels.items())]
    for outcome in result.failed[:10]:
        p = outcome.profile
        lines.append(f"  seed {p.seed}: threads {p.threads}, tasks {p.tasks}, inline "
                     f"{p.inline}, readers {p.readers}/{p.read_mode}, {p.synchronous}, "
                     f"faults {','.join(p.faults) or '-'}")
        lines += ["    " + x for x in outcome.excerpt]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--histories", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="first history's seed")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"fault kinds allowed (default all: {','.join(FAULT_KINDS)})")
    parser.add_argument("--threads", type=int, default=None, help="fix the thread count")
    parser.add_argument("--inline", choices=("on", "off"), default=None,
                        help="fix the in-place option (default: drawn per history)")
    parser.add_argument("--tasks", type=int, default=None, help="fix the asyncio task count")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of calls per history (default: drawn, 0.3-1.0)")
    parser.add_argument("--every", action="store_true",
                        help="inject every allowed fault kind in every history")
    parser.add_argument("--doors", default=",".join(Caller.DOORS),
                        help=f"the threads' doors (default all: {','.join(Caller.DOORS)})")
    parser.add_argument("--interrupted", choices=(hc.NOT, hc.MAY), default=hc.NOT,
                        help="what RequestTimeout(interrupted=True) means: not committed "
                             "(default), or may have committed")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # the kill -9 form: run one history here until the parent kills us
        path, log_path, spec = args.child
        fields = json.loads(spec)
        fields["faults"] = [k for k in fields["faults"] if k != "kill"]
        run = Run(Profile(**fields), path, log_path, tuple(args.doors.split(",")),
                  args.interrupted)
        run.play(started=lambda: print("running", flush=True))
        return 0
    allowed = tuple(k for k in args.faults.split(",") if k)
    unknown = set(allowed) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    doors = tuple(d for d in args.doors.split(",") if d)
    if not doors or set(doors) - set(Caller.DOORS):
        parser.error(f"--doors: a comma-separated subset of {','.join(Caller.DOORS)}")
    seed = random.randrange(2**31) if args.seed is None else args.seed
    result = campaign(args.histories, seed, allowed, args.threads,
                      None if args.inline is None else args.inline == "on",
                      args.tasks, args.every, args.duration, doors, args.interrupted,
                      progress=not args.quiet)
    command = " ".join(["python -m benchmarks.history", *(argv or sys.argv[1:])])
    if args.seed is None:
        command += f" --seed {seed}"
    print(report(result, command))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
