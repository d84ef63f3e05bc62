"""Every way to write to SQLite from many threads, in one run (issue 3, section 3).

Run from the repository root::

    .venv/bin/python benchmarks/compare.py                    # the full sweep (about 3 min)
    .venv/bin/python benchmarks/compare.py --quick            # threads 1,8,32, 1 s per cell
    .venv/bin/python benchmarks/compare.py --goals --markdown # the four goal runs, PASS/MISS

Options: ``--workload pageview|mixed|all``, ``--threads 1,8,32,64``,
``--seconds 3``, ``--synchronous FULL|NORMAL``, ``--think-ms 0``,
``--strategies retry,busy,...``, ``--markdown``, ``--chart PATH`` (default
``benchmarks/compare.png``; ``--no-chart`` to skip it).

Strategies, each behind the small :class:`Strategy` interface, with the same
SQL on the same file settings (WAL, ``synchronous`` FULL unless NORMAL is asked):

- ``retry``: each thread its own apsw connection, busy timeout 0, the whole
  unit retried with exponential backoff and full jitter capped at 2 s
  (``sqlite_gateway.baseline.RetryGateway``: the approach this project replaces);
- ``busy``: each thread its own apsw connection, busy timeout 5 s,
  ``BEGIN IMMEDIATE`` (Django 5.1's ``transaction_mode="IMMEDIATE"``, Rails 8);
- ``peewee``: ``playhouse.sqliteq.SqliteQueueDatabase`` as it ships (stdlib
  ``sqlite3``, whose SQLite version the header shows; it reads in the caller's
  thread and queues everything else);
- ``gateway-nobatch`` (``batch_max=1``), ``gateway`` (``readers=0``) and
  ``gateway+readers`` (``readers=`` the thread count: each caller thread owns a
  read-only connection and reads in place) and ``gateway+reader-threads``
  (``readers=2, read_mode="threads"``: reads handed to two reader threads);
- ``ceiling``: one thread, apsw, every operation of the window in one
  transaction: the limit of this machine (it ignores the thread count and the
  think time; its row repeats in each thread group).

The schema has a trigger, ``AFTER INSERT ON log`` incrementing the page's
counter, so that one pageview is the single statement ``INSERT INTO log(page,
at) VALUES (?, ?)``, atomic with its trigger. (peewee's queue cannot run a
multi-statement transaction: ``atomic()`` raises.) Workloads:

- ``pageview``: every operation is one pageview on one of 10 hot pages;
- ``mixed``: 90 % reads, half ``SELECT n FROM counters WHERE page = ?``, half
  ``SELECT count(*) FROM log WHERE at > ?`` (the last second, on an index),
  and 10 % pageviews.

N caller threads run operations until a deadline; with ``--think-ms`` each
sleeps between operations for a random time (exponential, that mean, capped
at 10x): web traffic is not a closed loop. Every cell (workload x strategy x
thread count) runs in a fresh child process (this script with a hidden
``--cell``; it prints one JSON line) on a fresh database that the parent
creates in a temporary directory and checks afterwards with apsw: the
counters must sum to the log rows, and the log must hold exactly one row per
pageview answered as done. (The parent never uses the stdlib ``sqlite3``; the
peewee child never opens the file with apsw.)

Figures per cell: ops/s counts operations completed inside the window;
p50/p95/p99 are over every successful operation (one that ends after the
window included); ``starved`` counts threads that completed no operation in
the window; ``half-wait`` is the time-weighted median (DECISIONS 14): the
latency below which half of all callers' waiting time falls, failed calls'
waits included. ``gateway ÷`` is gateway's ops/s over that row's. The script
exits 1 if a cell fails its check or its child crashes; a missed goal
(``--goals``) is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import apsw

# Run as a script from a checkout: make the library importable without installing it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from figures import percentile  # noqa: E402
from group_commit import check_database  # noqa: E402  (the same tables: counters = log rows)
from sqlite_gateway import Gateway  # noqa: E402
from sqlite_gateway.baseline import RetryGateway  # noqa: E402

PAGES = 10  # hot counter rows
READ_SHARE = 0.90  # of the operations in `mixed`
RECENT_S = 1.0  # "recent" log rows: the last second
STRATEGIES = ("retry", "busy", "peewee", "gateway-nobatch", "gateway", "gateway+readers",
              "gateway+reader-threads",
              "ceiling")
WORKLOADS = ("pageview", "mixed")
DEFAULT_THREADS = (1, 8, 32, 64)
DEFAULT_SECONDS = 3.0
QUICK_THREADS = (1, 8, 32)
QUICK_SECONDS = 1.0
GOAL_THREADS = 32
READER_THREADS = 2  # gateway+reader-threads: one per core
BUSY_TIMEOUT_S = 5.0  # busy (and the gateways')
CALL_TIMEOUT = 30.0  # one caller's longest wait for one answer (retry: its deadline)
JOIN_GRACE = CALL_TIMEOUT + 15.0  # past the deadline, how long to wait for callers
CHILD_GRACE = JOIN_GRACE + 45.0  # past the deadline, how long to wait for a child
DEFAULT_CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare.png")

SCHEMA = """
CREATE TABLE log(id INTEGER PRIMARY KEY, page INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX log_at ON log(at);
CREATE TABLE counters(page INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER log_counts AFTER INSERT ON log BEGIN
    UPDATE counters SET n = n + 1 WHERE page = NEW.page;
END;
"""
PAGEVIEW = "INSERT INTO log(page, at) VALUES (?, ?)"
READ_COUNTER = "SELECT n FROM counters WHERE page = ?"
READ_RECENT = "SELECT count(*) FROM log WHERE at > ?"


# -- the strategies (built and used in the child) ------------------------------------


class NotAvailable(Exception):
    """The strategy cannot run here (reported as n/a, not as a failure)."""


class Strategy:
    """One way to reach the database, shared by every caller thread of a cell.

    ``pageview`` and ``read`` are called from many threads at once and return
    only once done (committed, for a pageview); they raise on failure.
    """

    single_thread = False  # True: the cell runs one caller whatever the thread count

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous

    def open(self) -> None: ...

    def enter_thread(self) -> None:
        """In each caller thread before the window: open what it opens per thread."""

    def pageview(self, page: int, at: float) -> None:
        raise NotImplementedError

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def finish(self) -> None:
        """After the window, before the clock stops (the ceiling commits here)."""

    def close(self) -> None: ...

    def figures(self) -> dict[str, Any]:
        return {}


class GatewayStrategy(Strategy):
    def __init__(self, path: str, synchronous: str, *, batch_max: int = 256,
                 readers: int = 0, read_mode: str = "inline") -> None:
        super().__init__(path, synchronous)
        self.options: dict[str, Any] = {"batch_max": batch_max, "readers": readers,
                                        "read_mode": read_mode}

    def open(self) -> None:
        self.db = Gateway(self.path, synchronous=self.synchronous, timeout=CALL_TIMEOUT,
                          busy_timeout=BUSY_TIMEOUT_S, **self.options)
        self.db.start()

    def pageview(self, page: int, at: float) -> None:
        self.db.execute(PAGEVIEW, (page, at))

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.execute(sql, params).scalar()

    def close(self) -> None:
        self.db.close(timeout=JOIN_GRACE)

    def figures(self) -> dict[str, Any]:
        stats = self.db.stats()
        return {"batch_mean": stats.get("batch_mean", 0.0), "reads_on_readers": stats.get("reads")}


class RetryStrategy(Strategy):
    def open(self) -> None:
        self.db = RetryGateway(self.path, synchronous=self.synchronous,
                               timeout=CALL_TIMEOUT).start()

    def enter_thread(self) -> None:
        self.db.execute("SELECT 1")  # opens this thread's connection

    def pageview(self, page: int, at: float) -> None:
        self.db.execute(PAGEVIEW, (page, at))

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.execute(sql, params).scalar()

    def close(self) -> None:
        self.db.close()

    def figures(self) -> dict[str, Any]:
        return {"retries": self.db.stats()["retries"]}


def _apsw_connection(path: str, synchronous: str, busy_timeout: float) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.set_busy_timeout(int(busy_timeout * 1000))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class BusyStrategy(Strategy):
    """Per-thread connections that wait in SQLite's busy handler, BEGIN IMMEDIATE."""

    def open(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()  # guards conns
        self.conns: list[apsw.Connection] = []

    def enter_thread(self) -> None:
        self.conn()

    def conn(self) -> apsw.Connection:
        conn: apsw.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = _apsw_connection(self.path, self.synchronous,
                                                      BUSY_TIMEOUT_S)
            with self.lock:
                self.conns.append(conn)
        return conn

    def pageview(self, page: int, at: float) -> None:
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(PAGEVIEW, (page, at))
            conn.execute("COMMIT")
        except BaseException:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
            raise

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.conn().execute(sql, params).fetchall()[0][0]  # autocommit

    def close(self) -> None:
        with self.lock:
            for conn in self.conns:
                conn.close()


class PeeweeStrategy(Strategy):
    """SqliteQueueDatabase as it ships: writes queued to its writer thread,
    SELECTs on the caller's own (thread-local) connection."""

    def open(self) -> None:
        try:  # stdlib sqlite3: this child only
            from playhouse.sqliteq import SqliteQueueDatabase
        except ImportError:
            raise NotAvailable("peewee is not installed (pip install peewee)") from None

        self.db = SqliteQueueDatabase(
            self.path, results_timeout=CALL_TIMEOUT,
            pragmas={"journal_mode": "wal", "synchronous": self.synchronous, "foreign_keys": 1})

    def enter_thread(self) -> None:
        self.db.connect(reuse_if_open=True)  # this thread's connection, for its reads

    def pageview(self, page: int, at: float) -> None:
        self.db.execute_sql(PAGEVIEW, (page, at)).fetchall()  # waits; raises its error

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        cursor = self.db.execute_sql(sql, params)
        try:
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def close(self) -> None:
        # stop() joins the writer with no timeout: bound it from here.
        stopper = threading.Thread(target=self.db.stop, daemon=True)
        stopper.start()
        stopper.join(JOIN_GRACE)
        if stopper.is_alive():
            raise RuntimeError(f"peewee's writer did not stop within {JOIN_GRACE:.0f} s")


class CeilingStrategy(Strategy):
    """One thread, one connection, every operation in one transaction."""

    single_thread = True

    def open(self) -> None:
        self.conn = _apsw_connection(self.path, self.synchronous, BUSY_TIMEOUT_S)
        self.conn.execute("BEGIN IMMEDIATE")

    def pageview(self, page: int, at: float) -> None:
        self.conn.execute(PAGEVIEW, (page, at))

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.conn.execute(sql, params).fetchall()[0][0]

    def finish(self) -> None:
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def make_strategy(name: str, path: str, synchronous: str, threads: int) -> Strategy:
    makers: dict[str, Callable[[], Strategy]] = {
        "retry": lambda: RetryStrategy(path, synchronous),
        "busy": lambda: BusyStrategy(path, synchronous),
        "peewee": lambda: PeeweeStrategy(path, synchronous),
        "gateway-nobatch": lambda: GatewayStrategy(path, synchronous, batch_max=1),
        "gateway": lambda: GatewayStrategy(path, synchronous),
        # Each caller thread owns a reader, as a web app sets readers to its thread pool.
        "gateway+readers": lambda: GatewayStrategy(path, synchronous, readers=threads),
        "gateway+reader-threads": lambda: GatewayStrategy(
            path, synchronous, readers=READER_THREADS, read_mode="threads"),
        "ceiling": lambda: CeilingStrategy(path, synchronous),
    }
    return makers[name]()


# -- one cell (runs in the child process) --------------------------------------------


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
        self.pageviews = 0  # pageviews answered as done
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
        self.start.wait()
        deadline = self.deadline[0]
        strategy, rng, clock = self.strategy, self.rng, time.perf_counter
        mixed = self.workload == "mixed"
        while clock() < deadline:  # bounded: the deadline
            write = not mixed or rng.random() >= READ_SHARE
            began = clock()
            try:
                if write:
                    strategy.pageview(rng.randrange(PAGES), time.time())
                elif rng.random() < 0.5:
                    strategy.read(READ_COUNTER, (rng.randrange(PAGES),))
                else:
                    strategy.read(READ_RECENT, (time.time() - RECENT_S,))
            except Exception as exc:  # counted and reported
                self.failed.append(clock() - began)
                if len(self.errors) < 3:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done = clock()
            self.latencies.append(done - began)
            self.in_window += done <= deadline
            self.pageviews += write
            if self.think_s:
                pause = min(rng.expovariate(1 / self.think_s), 10 * self.think_s)
                time.sleep(max(0.0, min(pause, deadline - clock())))


def half_wait(ordered: Sequence[float]) -> float:
    """Time-weighted median: the latency where the running sum passes half the total."""
    if not ordered:
        return 0.0
    running = list(itertools.accumulate(ordered))
    return ordered[min(len(ordered) - 1, bisect.bisect_left(running, running[-1] / 2))]


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell on the database the parent prepared; return its figures."""
    name, threads, seconds = spec["strategy"], spec["threads"], spec["seconds"]
    base = {"strategy": name, "workload": spec["workload"], "threads": threads}
    strategy = make_strategy(name, spec["path"], spec["synchronous"], threads)
    try:
        strategy.open()
    except NotAvailable as exc:
        return {**base, "na": str(exc)}
    callers_n = 1 if strategy.single_thread else threads
    start, deadline = threading.Event(), [0.0]
    think_s = 0.0 if strategy.single_thread else spec["think_ms"] / 1000
    callers = [Caller(strategy, spec["workload"], think_s, seed, start, deadline)
               for seed in range(callers_n)]
    for caller in callers:
        caller.thread.start()
    ready_by = time.monotonic() + JOIN_GRACE
    for caller in callers:  # every thread has its connection before the clock starts
        caller.ready.wait(max(0.0, ready_by - time.monotonic()))
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.set()
    time.sleep(seconds)
    join_by = time.monotonic() + JOIN_GRACE
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
        problems.append(f"{stuck} caller threads still running {JOIN_GRACE:.0f} s after the end")
    else:  # closing under a stuck caller could block: the child exits without it
        try:
            strategy.close()
        except Exception as exc:
            problems.append(f"close: {type(exc).__name__}: {exc}")
    latencies = sorted(lat for caller in callers for lat in caller.latencies)
    waits = sorted(itertools.chain(latencies, (w for c in callers for w in c.failed)))
    in_window = sum(caller.in_window for caller in callers)
    samples = sorted({err for caller in callers for err in caller.errors})[:4] + problems
    return {**base, **extra,
            "callers": callers_n, "seconds": seconds, "finish_s": finish_s,
            "ops": len(latencies), "ops_in_window": in_window,
            "ops_per_s": in_window / (seconds + finish_s),
            "pageviews": sum(caller.pageviews for caller in callers),
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p95_ms": percentile(latencies, 0.95) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
            "half_wait_ms": half_wait(waits) * 1000,
            "starved": sum(caller.in_window == 0 for caller in callers),
            "errors": sum(len(caller.failed) for caller in callers) + len(problems),
            "error_samples": samples, "stuck": stuck,
            "sqlite": _sqlite_version(name)}


def _sqlite_version(name: str) -> str:
    if name == "peewee":
        import sqlite3  # the peewee child only; it never opens the file with apsw
        return sqlite3.sqlite_version
    return apsw.sqlite_lib_version()


# -- the parent: one child per cell, then tables, goals and the chart -----------------


def create_schema(path: str) -> None:
    conn = apsw.Connection(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        with conn:
            conn.execute(SCHEMA).fetchall()
            conn.executemany("INSERT INTO counters(page, n) VALUES (?, 0)",
                             [(page,) for page in range(PAGES)])
    finally:
        conn.close()


def run_child(spec: dict[str, Any], tick: Callable[[], None]) -> dict[str, Any]:
    """Run one cell in a fresh interpreter on a fresh database; check it afterwards."""
    base = {"strategy": spec["strategy"], "workload": spec["workload"],
            "threads": spec["threads"]}
    failed = {**base, "ops": 0, "ops_per_s": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0,
              "half_wait_ms": 0.0, "errors": 1, "starved": spec["threads"], "correct": False}
    limit = spec["seconds"] + CHILD_GRACE
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-compare-") as tmp:
        path = os.path.join(tmp, "bench.db")
        create_schema(path)
        command = [sys.executable, os.path.abspath(__file__), "--cell",
                   json.dumps({**spec, "path": path})]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        give_up = time.monotonic() + limit
        while True:  # bounded: give_up
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                tick()
                if time.monotonic() > give_up:
                    proc.kill()
                    proc.communicate()
                    return {**failed, "error_samples": [f"child timed out after {limit:.0f} s"]}
        lines = out.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = err.strip().splitlines()[-3:]
            return {**failed, "error_samples": [f"child exited {proc.returncode}", *tail]}
        cell: dict[str, Any] = json.loads(lines[-1])
        if "na" not in cell:
            cell.update(check_database(path, cell["pageviews"]))
    return cell


class Progress:
    """A tqdm bar on stderr (plain lines when tqdm is missing)."""

    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, file=sys.stderr, unit="cell", dynamic_ncols=True,
                            mininterval=0.5)
        self.live = sys.stderr.isatty()  # redraw the clock while a cell runs

    def begin(self, spec: dict[str, Any]) -> None:
        label = f"{spec['workload']} {spec['strategy']} x{spec['threads']}"
        if self.bar is not None:
            self.bar.set_description(label)

    def tick(self) -> None:
        if self.bar is not None and self.live:
            self.bar.refresh()

    def end(self, cell: dict[str, Any]) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {describe(cell)}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe(cell: dict[str, Any]) -> str:
    head = f"{cell['workload']:<8} {cell['strategy']:<15} x{cell['threads']:<3}"
    if "na" in cell:
        return f"{head} n/a: {cell['na']}"
    text = (f"{head} {cell['ops_per_s']:>9,.0f} ops/s  p50 {cell['p50_ms']:.2f}  "
            f"p99 {cell['p99_ms']:.2f}  half-wait {cell['half_wait_ms']:.2f} ms  "
            f"errors {cell['errors']}  starved {cell['starved']}")
    if cell.get("batch_mean"):
        text += f"  batch {cell['batch_mean']:.1f}"
    text += "  ok" if cell.get("correct") else "  FAIL"
    for sample in cell.get("error_samples", []):
        text += f"\n    {sample}"
    return text


def run_config(config: dict[str, Any], strategies: Sequence[str], threads: Sequence[int],
               progress: Progress) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (strategy, thread count) cell of one configuration; ceiling runs once."""
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    ceiling = None
    for count in threads:
        for name in strategies:
            spec = {**config, "strategy": name, "threads": count}
            if name == "ceiling" and ceiling is not None:
                cells[name, count] = {**ceiling, "threads": count}
                continue
            progress.begin(spec)
            cell = run_child(spec, progress.tick)
            progress.end(cell)
            cells[name, count] = cell
            if name == "ceiling":
                ceiling = cell
    return cells


def cell_count(strategies: Sequence[str], threads: Sequence[int]) -> int:
    return sum(len(threads) if name != "ceiling" else 1 for name in strategies)


# -- reporting --------------------------------------------------------------------------


COLUMNS = ("threads", "strategy", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors", "retries",
           "starved", "half-wait ms", "gateway ÷", "correct")


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def table_rows(cells: dict[tuple[str, int], dict[str, Any]], strategies: Sequence[str],
               threads: Sequence[int]) -> list[tuple[str, ...]]:
    rows = []
    for count in threads:
        gateway = cells.get(("gateway", count))
        for name in strategies:
            cell = cells[name, count]
            label = "ceiling (1 thread)" if name == "ceiling" else name
            if "na" in cell:
                rows.append((str(count), label, "n/a", *("",) * (len(COLUMNS) - 3)))
                continue
            vs = "-"
            if gateway is not None and "na" not in gateway:
                vs = f"{ratio(gateway['ops_per_s'], cell['ops_per_s']):.2f}x"
            retries = str(cell["retries"]) if "retries" in cell else "-"
            rows.append((str(count), label, f"{cell['ops_per_s']:,.0f}", f"{cell['p50_ms']:.2f}",
                         f"{cell['p95_ms']:.2f}", f"{cell['p99_ms']:.2f}", str(cell["errors"]),
                         retries, str(cell["starved"]), f"{cell['half_wait_ms']:.2f}", vs,
                         "ok" if cell.get("correct") else "FAIL"))
    return rows


def print_table(title: str, rows: list[tuple[str, ...]], markdown: bool) -> None:
    print()
    if markdown:
        print(f"#### {title}")
        print()
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join(":---" if c == "strategy" else ":---:" if c == "correct"
                             else "---:" for c in COLUMNS) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    print(title)
    widths = [max(len(COLUMNS[i]), *(len(row[i]) for row in rows)) for i in range(len(COLUMNS))]
    print("  ".join(name.ljust(w) if name == "strategy" else name.rjust(w)
                    for name, w in zip(COLUMNS, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 1 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))


def config_title(config: dict[str, Any]) -> str:
    return (f"{config['workload']}: synchronous={config['synchronous']}, "
            f"think {config['think_ms']:g} ms, {config['seconds']:g} s per cell")


def machine_lines(args: argparse.Namespace, cells: list[dict[str, Any]]) -> list[tuple[str, str]]:
    lines = [
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("apsw", f"{apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}"),
    ]
    peewee_sqlite = next((c["sqlite"] for c in cells if c.get("strategy") == "peewee"
                          and "sqlite" in c), None)
    if peewee_sqlite:
        from importlib.metadata import version
        lines.append(("peewee", f"{version('peewee')}, stdlib sqlite3 with SQLite {peewee_sqlite}"))
    lines += [
        ("cpus", str(os.cpu_count())),
        ("platform", platform.platform()),
        ("database dir", tempfile.gettempdir()),
        ("settings", f"--goals: {GOAL_THREADS} threads, the four goal configurations, "
                     f"{args.seconds:g} s per cell" if args.goals else
         f"threads {','.join(map(str, args.threads))}, synchronous={args.synchronous}, "
         f"think {args.think_ms:g} ms, {args.seconds:g} s per cell"),
        ("command", shlex.join(sys.orig_argv)),
    ]
    return lines


def print_header(lines: list[tuple[str, str]], markdown: bool) -> None:
    if markdown:
        for key, value in lines:
            print(f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}")
        return
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")


# -- goals (issue 3, section 3), all at 32 threads, ratios from the same run ---------------


GOAL_CONFIGS = (
    ("pageview", "FULL", 0.0, ("gateway", "busy", "gateway-nobatch", "peewee", "retry", "ceiling")),
    ("pageview", "NORMAL", 0.0, ("gateway", "busy")),
    ("pageview", "FULL", 5.0, ("gateway", "busy")),
    ("mixed", "FULL", 0.0, ("gateway+readers", "gateway", "busy", "peewee")),
)
THREADED = ("retry", "busy", "peewee", "gateway-nobatch", "gateway", "gateway+readers",
            "gateway+reader-threads")


def goal_lines(index: int, cells: dict[str, dict[str, Any]]) -> list[tuple[bool, str]]:
    """(passed, text) for each goal of configuration ``index`` (cells by strategy)."""
    def ok(name: str) -> dict[str, Any] | None:
        cell = cells.get(name)
        return None if cell is None or "na" in cell or not cell.get("correct") else cell

    out: list[tuple[bool, str]] = []

    def at_least(a: str, b: str, goal: float, strict: bool = False) -> None:
        ca, cb = ok(a), ok(b)
        if ca is None or cb is None:
            out.append((False, f"{a} / {b} >= {goal:g}x: n/a (a cell was n/a or failed)"))
            return
        r = ratio(ca["ops_per_s"], cb["ops_per_s"])
        passed = r > goal if strict else r >= goal
        out.append((passed, f"{a} / {b} = {r:.2f}x (goal {'>' if strict else '>='} {goal:g}x; "
                            f"{ca['ops_per_s']:,.0f} vs {cb['ops_per_s']:,.0f} ops/s)"))

    def zero(name: str, key: str) -> None:
        cell = ok(name)
        value = cell[key] if cell is not None else "n/a"
        out.append((value == 0, f"{name} {key} = {value} (goal 0)"))

    if index == 0:
        for other, goal in (("busy", 3), ("gateway-nobatch", 3), ("peewee", 6), ("retry", 15),
                            ("ceiling", 0.08)):
            at_least("gateway", other, goal)
        zero("gateway", "errors")
        zero("gateway", "starved")
        mine = ok("gateway")
        others = {n: c["half_wait_ms"] for n, c in cells.items()
                  if n in THREADED and n != "gateway" and "na" not in c}
        if mine is None:
            out.append((False, "gateway half-wait lowest: n/a"))
        else:
            best = min(others.items(), key=lambda kv: kv[1]) if others else ("-", math.inf)
            out.append((mine["half_wait_ms"] < best[1],
                        f"gateway half-wait = {mine['half_wait_ms']:.2f} ms, lowest of all "
                        f"(next: {best[0]} {best[1]:.2f} ms)"))
    elif index == 1:
        at_least("gateway", "busy", 1.0)
        zero("gateway", "starved")
    elif index == 2:
        gw, busy = ok("gateway"), ok("busy")
        if gw is None or busy is None:
            out.append((False, "gateway p99 <= busy p99 / 10: n/a"))
        else:
            out.append((gw["p99_ms"] * 10 <= busy["p99_ms"],
                        f"gateway p99 = {gw['p99_ms']:.2f} ms vs busy p99 = "
                        f"{busy['p99_ms']:.2f} ms: 1/{ratio(busy['p99_ms'], gw['p99_ms']):.1f} "
                        "(goal <= 1/10)"))
    else:
        at_least("gateway+readers", "gateway", 1.5)
        at_least("gateway+readers", "busy", 1.0)
        at_least("gateway+readers", "peewee", 1.0, strict=True)
        zero("gateway+readers", "starved")
    return out


# -- the chart ----------------------------------------------------------------------------


Cells = dict[tuple[str, int], dict[str, Any]]


def draw_chart(path: str, results: list[tuple[dict[str, Any], Cells]],
               strategies: Sequence[str], threads: Sequence[int]) -> str | None:
    """ops/s against threads, one line per strategy, one panel per configuration."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5.2), squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(STRATEGIES)}  # the same in every panel
    labels: dict[str, Any] = {}
    for ax, (config, cells) in zip(axes[0], results, strict=True):
        for name in strategies:
            points = [(n, cells[name, n]["ops_per_s"]) for n in threads
                      if "na" not in cells[name, n] and cells[name, n]["ops_per_s"] > 0]
            if not points:
                continue
            if name == "ceiling":
                labels["ceiling (1 thread, one transaction)"] = ax.axhline(
                    points[0][1], color="black", linestyle="--", linewidth=1)
                continue
            labels[name], = ax.plot(*zip(*points, strict=False), marker="o", color=colours[name],
                                    linewidth=2.5 if name.startswith("gateway") else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(threads), [str(n) for n in threads])
        ax.set_xlabel("caller threads")
        ax.set_ylabel("operations per second")
        ax.set_title(config_title(config), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- command line -------------------------------------------------------------------------


def csv_of(kind: Callable[[str], Any],
           choices: Sequence[Any] | None = None) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            values = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        bad = [v for v in values if (choices is not None and v not in choices)
               or (isinstance(v, int) and v < 1)]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"bad value(s) {bad or text!r}"
                                             + (f"; choose from {', '.join(choices)}"
                                                if choices else ""))
        return values
    return parse


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput, latency and fairness of every way to write to SQLite "
                    "from many threads (issue 3, section 3).")
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all")
    parser.add_argument("--threads", type=csv_of(int), default=None,
                        help="comma-separated caller thread counts (default 1,8,32,64)")
    parser.add_argument("--seconds", type=non_negative, default=None,
                        help=f"duration of each cell (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--synchronous", type=str.upper, choices=("FULL", "NORMAL"),
                        default="FULL", help="PRAGMA synchronous (default FULL)")
    parser.add_argument("--think-ms", type=non_negative, default=0.0,
                        help="mean think time between a thread's operations (default 0)")
    parser.add_argument("--strategies", type=csv_of(str, STRATEGIES), default=STRATEGIES,
                        help=f"comma-separated subset of {','.join(STRATEGIES)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"threads {','.join(map(str, QUICK_THREADS))}, {QUICK_SECONDS:g} s "
                             "per cell (explicit options win)")
    parser.add_argument("--goals", action="store_true",
                        help="run the four goal configurations at 32 threads; PASS/MISS per goal")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--chart", default=DEFAULT_CHART, help="PNG path (default %(default)s)")
    parser.add_argument("--no-chart", action="store_true", help="draw no chart")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # JSON spec, in the child
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = QUICK_THREADS if args.quick else DEFAULT_THREADS
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if not args.seconds > 0:
        parser.error("--seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell:
        cell = run_cell(json.loads(args.cell))
        print(json.dumps(cell), flush=True)
        if cell.get("stuck"):
            os._exit(0)  # a stuck caller must not hold the exit
        return 0

    if args.goals:
        plan = [({"workload": w, "synchronous": s, "think_ms": t, "seconds": args.seconds},
                 names, (GOAL_THREADS,)) for w, s, t, names in GOAL_CONFIGS]
    else:
        workloads = WORKLOADS if args.workload == "all" else (args.workload,)
        plan = [({"workload": w, "synchronous": args.synchronous, "think_ms": args.think_ms,
                  "seconds": args.seconds}, args.strategies, args.threads) for w in workloads]
    progress = Progress(sum(cell_count(names, counts) for _, names, counts in plan))
    results = []
    began = time.monotonic()
    try:
        for config, names, counts in plan:
            results.append((config, run_config(config, names, counts, progress)))
    finally:
        progress.close()
    every_cell = [cell for _, cells in results for cell in cells.values()]
    failed = [c for c in every_cell if "na" not in c and not c.get("correct")]

    print_header(machine_lines(args, every_cell), args.markdown)
    misses = 0
    for index, ((config, cells), (_, names, counts)) in enumerate(
            zip(results, plan, strict=True)):
        print_table(config_title(config), table_rows(cells, names, counts), args.markdown)
        if args.goals:
            print()
            for passed, text in goal_lines(index, {name: cells[name, GOAL_THREADS]
                                                   for name in names}):
                misses += not passed
                print(f"{'- ' if args.markdown else ''}{'PASS' if passed else 'MISS'}  {text}")
    print()
    if args.goals:
        print(f"goals: {misses} missed" if misses else "goals: all met")
    elif not args.no_chart:
        problem = draw_chart(args.chart, results, args.strategies, args.threads)
        shown = os.path.relpath(args.chart)
        where = os.path.abspath(args.chart) if shown.startswith("..") else shown
        print(problem or f"chart: {where}")
    print(f"total time: {time.monotonic() - began:.0f} s")
    for cell in failed:
        print(f"FAILED: {describe(cell)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
