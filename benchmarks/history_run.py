"""One history being run: its profile, its recorder, its callers and its fault scheduler.

:func:`draw_profile` turns a seed into a :class:`Profile`; :class:`Run` opens
the gateway, starts the callers (:mod:`benchmarks.history_calls`) and the
fault scheduler, and closes the gateway at the end; :class:`Recorder` writes
the history's log, one fsync'd line per event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import threading
import time
from collections import Counter
from typing import Any

from sqlite_gateway import Gateway
from sqlite_gateway.integrations.asyncio import AsyncGateway

from . import history_check as hc
from .history_calls import ANSWER_BOUND, HANG_TIMEOUT, LONG, AsyncCaller, Caller
from .vfs.fault import FaultVFS

SCHEMA = ("CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, op INTEGER NOT NULL);"
          "CREATE TABLE IF NOT EXISTS counters(k INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
          "INSERT OR IGNORE INTO counters VALUES (0, 0), (1, 0), (2, 0)")
FAULT_KINDS = ("deadline", "slow-sync", "io", "hang", "death", "close", "cancel", "kill", "hold")
HOLD_LIMIT = 0.05  # the hold_limit of histories with the "hold" fault (write blocks expire)
VFS_NAME = "history-faults"

_vfs: FaultVFS | None = None
_vfs_lock = threading.Lock()


def fault_vfs() -> FaultVFS:
    """The process's one :class:`~benchmarks.vfs.fault.FaultVFS` (named :data:`VFS_NAME`),
    registered on first use; every history's gateway opens its file through it.
    Thread-safe."""
    global _vfs
    with _vfs_lock:
        if _vfs is None:
            _vfs = FaultVFS(VFS_NAME)
        return _vfs


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

    def intent(self, op: int, door: str, rows: list[int], ctr: tuple[int, int] | None,
               never: list[int] | None = None) -> None:
        self.write(e="intent", op=op, door=door, rows=rows, ctr=ctr, never=never or [])

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
                    synchronous=self.synchronous, vfs=fault_vfs().name, timeout=LONG,
                    hold_limit=HOLD_LIMIT if "hold" in self.faults else 5.0,
                    process_lock=True,  # the default, named: a killed child must let go of it
                    busy_timeout=0.2 if hang else 1.0,
                    hang_timeout=HANG_TIMEOUT if hang else 30.0)


def draw_profile(seed: int, allowed: tuple[str, ...] = FAULT_KINDS,
                 threads: int | None = None, inline: bool | None = None,
                 tasks: int | None = None, every: bool = False,
                 duration: float | None = None) -> Profile:
    """A random profile; ``allowed`` limits the fault kinds (``every``: all of them
    in every history), the others fix a field."""
    rng = random.Random(seed)
    faults = [k for k in FAULT_KINDS[:-1] if (rng.random() < 0.3 or every) and k in allowed]
    # "hold" is drawn from its own stream, so the older kinds' seeds keep their profiles.
    if "hold" in allowed and (every or random.Random(seed * 13 + 5).random() < 0.3):
        faults.append("hold")
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

    def db_hold_limit(self) -> float:
        """The gateway's hold limit in effect (it is at most half ``hang_timeout``)."""
        options = self.profile.options()
        return float(min(options["hold_limit"], options["hang_timeout"] / 2))

    def has_reader_pool(self) -> bool:
        """True if ``db.snapshot()`` has readers to run on (a pool, read in place)."""
        return self.profile.readers != 0 and self.profile.read_mode == "inline"

    def block_mode(self, rng: random.Random) -> str:
        """How the next write block behaves: "boom" raises in the body, "expire"
        (the hold fault) sleeps past ``hold_limit`` then runs a statement,
        "expire-exit" sleeps past it then leaves; else "plain"."""
        roll = rng.random()
        if "hold" in self.profile.faults and roll < 0.15:
            self.rec.fault("hold")
            return "expire" if roll < 0.075 else "expire-exit"
        return "boom" if roll > 0.9 else "plain"

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
        switches = fault_vfs().faults
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
                n = rng.randint(1, 3)
                switches.arm(reads=n if op == "reads" else 0, writes=n if op == "writes" else 0,
                             syncs=n if op == "syncs" else 0)
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
        switches = fault_vfs().faults
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
