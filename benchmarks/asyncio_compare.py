"""N tasks on one event loop run the page view: AsyncGateway against aiosqlite.

The workload is what an asyncio user writes: a page view is one transaction
of two statements (INSERT INTO views, then UPDATE pages SET views = views + 1,
over 10 hot pages), each task running one after another until time is up.
Strategies, each cell in a fresh child process (stdlib sqlite3, which
aiosqlite wraps, never shares a process with apsw on the same file):

- ``gateway``: ``await db.transaction(fn, ...)`` on one AsyncGateway.
- ``aiosqlite``: one aiosqlite connection shared by every task (its
  documented usage); an asyncio.Lock keeps each task's two statements and
  COMMIT together, without which one task's COMMIT would commit another's
  half-done view.
- ``aiosqlite-immediate``: a connection per task, ``BEGIN IMMEDIATE`` ...
  ``COMMIT``, SQLite's busy timeout (5 s, the gateway's default) to wait for
  the lock; a ``database is locked`` after it counts as an error.
- ``gateway-threads`` (reference, up to 100): the same page view through the
  threaded Gateway from N threads: what the await side costs against threads.

Same file settings everywhere: WAL, ``synchronous`` FULL by default. The
parent checks every cell's file after the child has exited (apsw): views
rows == sum(pages.views) == the views the child counted.

``--reads`` also measures where a read should go from the loop: through the
writer (no readers), a thread pool whose threads read in place (inline
readers), or that pool handing on to the gateway's reader threads.

Each cell starts once the 1-minute load average is under 0.9 (at most 90 s;
``--no-wait-quiet``, ``--quiet-below``, ``--quiet-max-wait``: see ``quiet.py``);
its load average before -> after is printed beside it (BUSY when it started at
>= 1.0), and one line says whether the run was quiet.

Run: ``python -m benchmarks.asyncio_compare`` (about 1 min; ``--quick``: 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
from typing import Any

from .harness import child_env, percentile, print_table, python_m
from .quiet import QuietWait, add_quiet_options, cell_load, load_text, quiet_line, quiet_wait

HOT_PAGES = 10
BUSY_TIMEOUT = 5.0
STRATEGIES = ("gateway", "aiosqlite", "aiosqlite-immediate", "gateway-threads")
READ_MODES = ("writer", "inline", "threads", "aiosqlite")
INSERT = "INSERT INTO views(page, ts) VALUES (?, ?)"
UPDATE = "UPDATE pages SET views = views + 1 WHERE name = ?"
READ = "SELECT views FROM pages WHERE name = ?"


def pageview(conn: Any, page: str, ts: float) -> None:
    """The transaction fn: what a user writes for one page view."""
    conn.execute(INSERT, (page, ts))
    conn.execute(UPDATE, (page,))


def page(i: int) -> str:
    return f"page-{i % HOT_PAGES}"


# -- child side: one cell -------------------------------------------------------


async def _run_tasks(n: int, seconds: float, op: Any) -> dict[str, Any]:
    """n tasks each calling ``await op(task, i)`` until the deadline; latencies, errors."""
    latencies: list[float] = []  # of the calls that ended inside the window
    errors: dict[str, int] = {}
    done = [0]  # every successful call, the late ones too (the file holds them all)
    deadline = 0.0

    async def task(t: int) -> None:
        i = t
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await op(t, i)
            except Exception as exc:  # counted: a caller's failure is a figure here
                key = f"{type(exc).__name__}: {str(exc)[:60]}"
                errors[key] = errors.get(key, 0) + 1
            else:
                done[0] += 1
                if time.perf_counter() <= deadline:
                    latencies.append(time.perf_counter() - start)
            i += n

    begin = time.perf_counter()
    deadline = begin + seconds
    await asyncio.gather(*(task(t) for t in range(n)))
    elapsed = time.perf_counter() - begin
    return {"ok": len(latencies), "done": done[0], "latencies": latencies, "errors": errors,
            "elapsed": min(elapsed, seconds)}


async def _gateway_cell(path: str, n: int, seconds: float, synchronous: str) -> dict[str, Any]:
    from sqlite_gateway.integrations.asyncio import AsyncGateway
    async with AsyncGateway(path, synchronous=synchronous, busy_timeout=BUSY_TIMEOUT) as db:
        async def op(t: int, i: int) -> None:
            await db.transaction(pageview, page(i), time.time())
        figures = await _run_tasks(n, seconds, op)
        figures["batch_mean"] = db.stats()["batch_mean"]
    # Everything counted was acknowledged, so committed; the drain adds nothing.
    return figures


async def _aiosqlite_open(path: str, synchronous: str, isolation: str | None) -> Any:
    import aiosqlite
    conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT, isolation_level=isolation)
    await conn.execute(f"PRAGMA synchronous={synchronous}")  # per connection in SQLite
    return conn


async def _aiosqlite_cell(path: str, n: int, seconds: float, synchronous: str) -> dict[str, Any]:
    conn = await _aiosqlite_open(path, synchronous, "")  # "": sqlite3's implicit BEGIN
    lock = asyncio.Lock()

    async def op(t: int, i: int) -> None:
        async with lock:
            try:
                await conn.execute(INSERT, (page(i), time.time()))
                await conn.execute(UPDATE, (page(i),))
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
    try:
        return await _run_tasks(n, seconds, op)
    finally:
        await conn.close()


async def _immediate_cell(path: str, n: int, seconds: float, synchronous: str) -> dict[str, Any]:
    conns = [await _aiosqlite_open(path, synchronous, None) for _ in range(n)]

    async def op(t: int, i: int) -> None:
        conn = conns[t]
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute(INSERT, (page(i), time.time()))
            await conn.execute(UPDATE, (page(i),))
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
    try:
        return await _run_tasks(n, seconds, op)
    finally:
        for conn in conns:
            await conn.close()


def _threads_cell(path: str, n: int, seconds: float, synchronous: str) -> dict[str, Any]:
    from sqlite_gateway import Gateway
    latencies: list[list[float]] = [[] for _ in range(n)]
    done = [0] * n
    errors: dict[str, int] = {}
    with Gateway(path, synchronous=synchronous, busy_timeout=BUSY_TIMEOUT) as db:
        begin = time.perf_counter()
        deadline = begin + seconds

        def run(t: int) -> None:
            i = t
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    db.transaction(pageview, page(i), time.time())
                except Exception as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                else:
                    done[t] += 1
                    if time.perf_counter() <= deadline:
                        latencies[t].append(time.perf_counter() - start)
                i += n

        threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batch_mean = db.stats()["batch_mean"]
    flat = [x for lat in latencies for x in lat]
    return {"ok": len(flat), "done": sum(done), "latencies": flat, "errors": errors,
            "elapsed": seconds,
            "batch_mean": batch_mean}


async def _reads_cell(path: str, mode: str, n: int, seconds: float,
                      synchronous: str) -> dict[str, Any]:
    if mode == "aiosqlite":
        conn = await _aiosqlite_open(path, synchronous, "")
        try:
            async def read(t: int, i: int) -> None:
                async with conn.execute(READ, (page(i),)) as cursor:
                    await cursor.fetchall()
            return await _run_tasks(n, seconds, read)
        finally:
            await conn.close()
    from sqlite_gateway.integrations.asyncio import AsyncGateway
    options: dict[str, Any] = {"readers": 0} if mode == "writer" else {
        "readers": 4, "read_mode": mode}
    async with AsyncGateway(path, synchronous=synchronous, **options) as db:
        async def op(t: int, i: int) -> None:
            await db.execute(READ, (page(i),))
        return await _run_tasks(n, seconds, op)


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One cell; adds the process's CPU time per successful call (all its threads),
    a figure that holds on a busy machine where the rate depends on the CPU share."""
    path, n, seconds, sync = cell["path"], cell["tasks"], cell["seconds"], cell["synchronous"]
    strategy = cell["strategy"]
    cpu = time.process_time()
    if strategy == "gateway-threads":
        figures = _threads_cell(path, n, seconds, sync)
    elif strategy.startswith("read:"):
        figures = asyncio.run(_reads_cell(path, strategy[5:], n, seconds, sync))
    else:
        cells = {"gateway": _gateway_cell, "aiosqlite": _aiosqlite_cell,
                 "aiosqlite-immediate": _immediate_cell}
        figures = asyncio.run(cells[strategy](path, n, seconds, sync))
    figures["cpu_us"] = (time.process_time() - cpu) / max(1, figures["done"]) * 1e6
    return figures


# -- parent side --------------------------------------------------------------------


def prepare(path: str) -> None:
    """The schema and the 10 hot pages, WAL; closed before the child starts."""
    import apsw
    conn = apsw.Connection(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("CREATE TABLE pages(name TEXT PRIMARY KEY, views INTEGER NOT NULL);"
                     "CREATE TABLE views(id INTEGER PRIMARY KEY, page TEXT NOT NULL, ts REAL)")
        with conn:
            conn.executemany("INSERT INTO pages VALUES (?, 0)",
                             [(page(i),) for i in range(HOT_PAGES)])
    finally:
        conn.close()


def check(path: str, done: int, reads: bool) -> bool:
    """After the child exited: every counted view is there, and nothing else."""
    import apsw
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT count(*) FROM views").fetchall()[0][0]
        total = conn.execute("SELECT sum(views) FROM pages").fetchall()[0][0]
    finally:
        conn.close()
    return rows == total == (0 if reads else done)


def measure(strategy: str, tasks: int, seconds: float, synchronous: str,
            quiet: QuietWait | None = None) -> dict[str, Any]:
    """One cell in a fresh child on a fresh database (after a quiet wait, with
    ``quiet``); its figures, checked, with the load average before and after."""
    with tempfile.TemporaryDirectory(prefix="asyncio-compare-") as tmp, \
            cell_load(quiet) as load:
        path = os.path.join(tmp, "bench.db")
        prepare(path)
        cell = {"strategy": strategy, "tasks": tasks, "seconds": seconds,
                "synchronous": synchronous, "path": path}
        proc = subprocess.run(python_m(__spec__.name, "--cell", json.dumps(cell)),
                              env=child_env(), capture_output=True, text=True,
                              timeout=seconds * 10 + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"cell {strategy} x{tasks} failed:\n{proc.stderr}")
        figures: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
        figures["correct"] = check(path, figures["done"], strategy.startswith("read:"))
    lat = sorted(figures.pop("latencies"))
    figures.update(strategy=strategy, tasks=tasks, ops_s=figures["ok"] / figures["elapsed"],
                   p50_ms=percentile(lat, 0.5) * 1e3, p99_ms=percentile(lat, 0.99) * 1e3,
                   **load)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="10,100,1000", help="comma-separated task counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--reads", action="store_true", help="also compare read paths")
    parser.add_argument("--quick", action="store_true", help="1 s cells, 10 and 100 tasks")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    quiet = quiet_wait(args)
    if args.quick:
        args.seconds, args.tasks = 1.0, "10,100"
    counts = [int(x) for x in args.tasks.split(",")]
    strategies = args.strategies.split(",")
    print(f"page view = transaction(INSERT view, UPDATE pages), {HOT_PAGES} hot pages, WAL, "
          f"synchronous={args.synchronous}, {args.seconds:g} s per cell, each cell a fresh "
          f"process; {os.cpu_count()} CPUs")
    results = []
    for n in counts:
        for strategy in strategies:
            if strategy == "gateway-threads" and n > 100:
                continue
            results.append(measure(strategy, n, args.seconds, args.synchronous, quiet))
    rows = []
    for r in results:
        best = max((o["ops_s"] for o in results if o["tasks"] == r["tasks"]
                    and o["strategy"].startswith("aiosqlite")), default=0.0)
        errors = sum(r["errors"].values())
        rows.append([r["strategy"], str(r["tasks"]), f"{r['ops_s']:,.0f}",
                     f"{r['ops_s'] / best:.1f}x" if best else "-",
                     f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(errors),
                     f"{r['cpu_us']:.0f}", f"{r['batch_mean']:.0f}" if "batch_mean" in r else "-",
                     load_text(r), "yes" if r["correct"] else "NO"])
    print_table(["strategy", "tasks", "views/s", "vs best aiosqlite", "p50 ms", "p99 ms",
                 "errors", "CPU us/view", "batch", "load", "correct"], rows, args.markdown)
    for r in results:
        for error, count in r["errors"].items():
            print(f"  {r['strategy']} x{r['tasks']}: {count} x {error}")
    if args.reads:
        print(f"\nreads: 100 tasks, point read of a hot page, {args.seconds:g} s per cell")
        reads = [measure("read:" + mode, 100, args.seconds, args.synchronous, quiet)
                 for mode in READ_MODES]
        print_table(["read path", "reads/s", "p50 ms", "p99 ms", "errors", "CPU us/read",
                     "load"],
                    [[r["strategy"][5:], f"{r['ops_s']:,.0f}", f"{r['p50_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", str(sum(r["errors"].values())),
                      f"{r['cpu_us']:.0f}", load_text(r)] for r in reads], args.markdown)
        results += reads
    print()
    print(quiet_line(results))
    print(quiet.line())


if __name__ == "__main__":
    main()
