"""The workloads of compare.py, and one cell: caller threads running one of them.

The tables: ``pages(name, views)`` with 10 hot rows ``'p0'`` .. ``'p9'``, and the
log ``views(page, ts)`` (indexed on page, ts). Workloads (what one operation is):

- ``pageview-fn`` (the primary write workload: what users write):
  ``db.transaction(pageview, page, ts)``, where ``pageview`` runs
  ``INSERT INTO views(page, ts) VALUES (?, ?)`` then
  ``UPDATE pages SET views = views + 1 WHERE name = ?``;
- ``pageview-trigger``: the single statement ``INSERT INTO views(page, ts)``; a
  trigger counts it on its page (peewee can run only this one);
- ``mixed``: 90 % reads, each two point reads (the page's counter, and the count
  of the page's log rows in the last second), 10 % ``pageview-fn`` writes;
- ``point-read``: 100 % ``SELECT views FROM pages WHERE name = ?``.

After a cell the parent checks the file: the counters sum to the log rows, and
the log holds exactly one row per write answered as done.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw
from .harness import half_wait, percentile

if TYPE_CHECKING:
    from .strategies import Strategy

WORKLOADS = ("pageview-fn", "pageview-trigger", "mixed", "point-read")
PAGES = tuple(f"p{i}" for i in range(10))  # the hot rows
READ_SHARE = 0.90  # of the operations in `mixed`
RECENT_S = 1.0  # "recent" log rows: the last second

SCHEMA = """
CREATE TABLE pages(name TEXT PRIMARY KEY, views INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE views(id INTEGER PRIMARY KEY, page TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX views_page_ts ON views(page, ts);
"""
TRIGGER = """
CREATE TRIGGER views_count AFTER INSERT ON views BEGIN
    UPDATE pages SET views = views + 1 WHERE name = NEW.page;
END;
"""
INSERT_VIEW = "INSERT INTO views(page, ts) VALUES (?, ?)"
BUMP_PAGE = "UPDATE pages SET views = views + 1 WHERE name = ?"
READ_COUNTER = "SELECT views FROM pages WHERE name = ?"
READ_RECENT = "SELECT count(*) FROM views WHERE page = ? AND ts > ?"


def pageview(conn: Any, page: str, ts: float) -> None:
    """The transaction fn users write: log the view, count it on its page."""
    conn.execute(INSERT_VIEW, (page, ts))
    conn.execute(BUMP_PAGE, (page,))


def create_schema(path: str, workload: str = "pageview-fn") -> None:
    """A fresh database for ``workload`` (WAL; the trigger for pageview-trigger only)."""
    conn = apsw.Connection(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        with conn:
            conn.execute(SCHEMA + (TRIGGER if workload == "pageview-trigger" else ""))
            conn.executemany("INSERT INTO pages(name, views) VALUES (?, 0)",
                             [(page,) for page in PAGES])
    finally:
        conn.close()


def check_database(path: str, writes: int) -> dict[str, Any]:
    """Counters sum to the log rows, and the log holds one row per write answered."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        log_rows = conn.execute("SELECT count(*) FROM views").fetchall()[0][0]
        counter_sum = conn.execute("SELECT sum(views) FROM pages").fetchall()[0][0]
    finally:
        conn.close()
    return {"log_rows": log_rows, "counter_sum": counter_sum,
            "correct": counter_sum == log_rows == writes}


def operation(workload: str, strategy: Strategy) -> Callable[[random.Random], bool]:
    """One operation of ``workload`` on ``strategy``; it returns True if it wrote."""
    write_fn, write_trigger, read = strategy.write_fn, strategy.write_trigger, strategy.read
    clock, pages = time.time, PAGES

    def fn(rng: random.Random) -> bool:
        write_fn(pages[rng.randrange(10)], clock())
        return True

    def trigger(rng: random.Random) -> bool:
        write_trigger(pages[rng.randrange(10)], clock())
        return True

    def point_read(rng: random.Random) -> bool:
        read(READ_COUNTER, (pages[rng.randrange(10)],))
        return False

    def mixed(rng: random.Random) -> bool:
        if rng.random() >= READ_SHARE:
            return fn(rng)
        page = pages[rng.randrange(10)]
        read(READ_COUNTER, (page,))
        read(READ_RECENT, (page, clock() - RECENT_S))
        return False

    return {"pageview-fn": fn, "pageview-trigger": trigger, "mixed": mixed,
            "point-read": point_read}[workload]


class Caller:
    """One client thread: runs operations until the deadline, timing each."""

    def __init__(self, strategy: Strategy, workload: str, think_s: float, seed: int,
                 start: threading.Event, deadline: list[float]) -> None:
        self.strategy, self.workload, self.think_s = strategy, workload, think_s
        self.rng = random.Random(seed)
        self.start, self.deadline = start, deadline  # deadline[0] is set just before start
        self.latencies = array("d")  # seconds, one per successful operation
        self.failed = array("d")  # seconds waited by each failed operation
        self.in_window = 0  # operations completed before the deadline
        self.writes = 0  # writes answered as done
        self.errors: list[str] = []
        self.ready = threading.Event()  # set once enter_thread() is done (or failed)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            self.strategy.enter_thread()
        except Exception as exc:
            self.errors.append(f"enter_thread: {type(exc).__name__}: {exc}")
            self.failed.append(0.0)
            return
        finally:
            self.ready.set()
        op, rng, clock = operation(self.workload, self.strategy), self.rng, time.perf_counter
        self.start.wait()
        deadline = self.deadline[0]
        while clock() < deadline:  # bounded: the deadline
            began = clock()
            try:
                wrote = op(rng)
            except Exception as exc:  # counted and reported
                self.failed.append(clock() - began)
                if len(self.errors) < 3:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done = clock()
            self.latencies.append(done - began)
            self.in_window += done <= deadline
            self.writes += wrote
            if self.think_s:
                pause = min(rng.expovariate(1 / self.think_s), 10 * self.think_s)
                time.sleep(max(0.0, min(pause, deadline - clock())))


def run_cell(strategy: Strategy, workload: str, threads: int, seconds: float,
             think_ms: float = 0.0, join_grace: float = 45.0) -> dict[str, Any]:
    """Run ``threads`` callers (one for a single-thread strategy) for ``seconds`` on
    an opened ``strategy``, then finish and close it; return the figures."""
    callers_n = 1 if strategy.single_thread else threads
    start, deadline = threading.Event(), [0.0]
    think_s = 0.0 if strategy.single_thread else think_ms / 1000
    callers = [Caller(strategy, workload, think_s, seed, start, deadline)
               for seed in range(callers_n)]
    for caller in callers:
        caller.thread.start()
    ready_by = time.monotonic() + join_grace
    for caller in callers:  # every thread has its connection before the clock starts
        caller.ready.wait(max(0.0, ready_by - time.monotonic()))
    deadline[0] = time.perf_counter() + seconds
    start.set()
    time.sleep(seconds)
    join_by = time.monotonic() + join_grace
    for caller in callers:
        caller.thread.join(max(0.0, join_by - time.monotonic()))
    stuck = sum(caller.thread.is_alive() for caller in callers)
    problems = []  # the cell's own failures, beside the operations'
    finish_began = time.perf_counter()
    try:
        strategy.finish()
    except Exception as exc:
        problems.append(f"finish: {type(exc).__name__}: {exc}")
    finish_s = time.perf_counter() - finish_began
    extra = strategy.figures()
    if stuck:
        problems.append(f"{stuck} caller threads still running {join_grace:.0f} s after the end")
    else:  # closing under a stuck caller could block: the child exits without it
        try:
            strategy.close()
        except Exception as exc:
            problems.append(f"close: {type(exc).__name__}: {exc}")
    latencies = sorted(itertools.chain.from_iterable(c.latencies for c in callers))
    waits = sorted(itertools.chain(latencies, (w for c in callers for w in c.failed)))
    samples = sorted({err for caller in callers for err in caller.errors})[:4] + problems
    in_window = sum(caller.in_window for caller in callers)
    return {**extra,
            "callers": callers_n, "seconds": seconds, "finish_s": finish_s,
            "ops": len(latencies), "ops_in_window": in_window,
            "ops_per_s": in_window / (seconds + finish_s),
            "writes": sum(caller.writes for caller in callers),
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p95_ms": percentile(latencies, 0.95) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
            "half_wait_ms": half_wait(waits) * 1000,
            "starved": sum(caller.in_window == 0 for caller in callers),
            "thread_ops": [caller.in_window for caller in callers],  # per thread, for fairness
            "errors": sum(len(caller.failed) for caller in callers) + len(problems),
            "error_samples": samples, "stuck": stuck}
