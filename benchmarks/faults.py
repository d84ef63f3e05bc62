"""Fault injection figures: each fault once, what the caller got, how fast, what was lost.

Run from the repository root::

    .venv/bin/python -m benchmarks.faults --markdown

For each fault it commits 100 rows, injects the fault under a running gateway,
records what the caller received and how long it took to be answered, checks
that the gateway serves again (the same one, or a new Gateway on the file when
the fault broke it), then closes it and reads the file with a plain apsw
connection: acknowledged rows missing (must be 0) and ``integrity_check``.
I/O errors come from the apsw VFS shim ``FaultVFS`` of ``benchmarks/vfs/fault.py``. Exit status 1
if any acknowledged row is lost or the file is damaged.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import apsw

# The harness beside it, the package, and the VFS shim from the tests.

from .vfs.fault import ALWAYS, FaultVFS
from .harness import print_table
from .quiet import cell_load, quiet_line

from sqlite_gateway import Gateway

ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c")
HOLDER = """
import sys, time, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""
VFS = FaultVFS("faults-figures")


class _Reopens(logging.Handler):
    """Counts the worker's "reopening its connection" log records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "reopening its connection" in record.getMessage()


REOPENS = _Reopens()
logging.getLogger("sqlite_gateway").addHandler(REOPENS)


class Run:
    """One fault's run: a database, the rows acknowledged, the outcome."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.acked: set[int] = set()
        self.got = ""
        self.answered_ms = 0.0
        self.after = ""
        self.reopens_before = REOPENS.count

    def write(self, db: Gateway, n: int = 1) -> None:
        for _ in range(n):
            i = len(self.acked) + 1000
            db.execute("INSERT INTO acked VALUES (?)", (i,))
            self.acked.add(i)

    def call(self, fn: Callable[[], object]) -> None:
        """Make the faulty call; record what it raised and when it was answered."""
        start = time.perf_counter()
        try:
            fn()
            self.got = "no error"
        except BaseException as exc:
            cls = type(exc)
            self.got = f"apsw.{cls.__name__}" if cls.__module__ == "apsw" else cls.__name__
        self.answered_ms = max(self.answered_ms, (time.perf_counter() - start) * 1000)

    def serves(self, db: Gateway, how: str) -> None:
        """Check that ``db`` serves (ten more acknowledged writes), as ``how`` says."""
        self.write(db, 10)
        if "reopened" in how:
            assert REOPENS.count > self.reopens_before, "the connection was not reopened"
        self.after = how


def gateway(path: str, **options: Any) -> Gateway:
    db = Gateway(path, vfs=VFS.name, readers=0, **options).start()  # every call on the writer
    db.execute("CREATE TABLE IF NOT EXISTS acked(id INTEGER PRIMARY KEY);"
               "CREATE TABLE IF NOT EXISTS blobs(b BLOB)")
    return db


def disk_full(run: Run) -> None:
    with closing(gateway(run.path)) as db:
        run.write(db, 100)
        db.run_exclusive(lambda c: c.execute(
            "PRAGMA max_page_count = " + str(c.execute("PRAGMA page_count").fetchall()[0][0])))
        run.call(lambda: db.execute("INSERT INTO blobs VALUES (zeroblob(200000))"))
        db.run_exclusive(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        run.serves(db, "serves on")


def wal_failure(op: str) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        with closing(gateway(run.path)) as db:
            run.write(db, 100)
            VFS.faults.arm(only="-wal", **{op: 1})
            run.call(lambda: db.execute("INSERT INTO acked VALUES (1)"))
            run.serves(db, "serves on (connection reopened)")
    return inject


def read_failure(run: Run) -> None:
    with closing(gateway(run.path)) as db:
        run.write(db, 100)
        outside = apsw.Connection(run.path)  # changes the file: the writer's cache is stale
        outside.execute("CREATE TABLE IF NOT EXISTS other(x)")
        outside.close()
        VFS.faults.arm(reads=1)
        run.call(lambda: db.execute("SELECT count(*) FROM acked"))
        run.serves(db, "serves on (connection reopened)")


def writes_failing_for_a_while(run: Run) -> None:
    with closing(gateway(run.path)) as db:
        run.write(db, 100)
        VFS.faults.arm(writes=ALWAYS, only="-wal")
        got = set()
        for _ in range(20):  # answered_ms: the slowest of them
            run.call(lambda: db.execute("INSERT INTO acked VALUES (1)"))
            got.add(run.got)
        run.got = f"{' or '.join(sorted(got))}, on each of 20 calls"
        VFS.faults.off()
        run.serves(db, "serves on once fixed")


def reopen_impossible(run: Run) -> None:
    db = gateway(run.path)
    run.write(db, 100)
    VFS.faults.arm(writes=ALWAYS, reads=ALWAYS)
    run.call(lambda: db.execute("INSERT INTO acked VALUES (1)"))
    start = time.perf_counter()
    while db.state.value != "broken" and time.perf_counter() - start < 10:
        time.sleep(0.01)
    run.got += f", then GatewayClosed ({(time.perf_counter() - start) * 1000:.0f} ms later)"
    db.close()
    VFS.faults.off()
    with closing(gateway(run.path)) as again:
        run.serves(again, "broken; a new Gateway serves")


def outside_lock(run: Run) -> None:
    with closing(gateway(run.path, busy_timeout=0.2)) as db:
        run.write(db, 100)
        with subprocess.Popen([sys.executable, "-c", HOLDER, run.path, "1.0"],
                              stdout=subprocess.PIPE, text=True) as holder:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            run.call(lambda: db.execute("INSERT INTO acked VALUES (1)"))
            holder.wait(30)
        run.serves(db, "serves on")


def past_deadline(run: Run) -> None:
    with closing(gateway(run.path)) as db:
        run.write(db, 100)
        run.call(lambda: db.execute(ENDLESS, timeout=0.2))
        run.got += " (interrupted)"
        run.serves(db, "serves on")


def past_hang_timeout(run: Run) -> None:
    with closing(gateway(run.path, busy_timeout=0.1, hang_timeout=0.5, timeout=None)) as db:
        run.write(db, 100)
        run.call(lambda: db.execute(ENDLESS))
        run.serves(db, "serves on")


def hung_fn(run: Run) -> None:
    db = gateway(run.path, busy_timeout=0.1, hang_timeout=1.0)
    run.write(db, 100)
    release = threading.Event()
    db.submit_transaction(lambda conn: release.wait(60))
    try:
        run.call(lambda: db.flush(timeout=None))  # a caller with no deadline of its own
        db.close()
    finally:
        release.set()
    db._life.thread.join(10)  # type: ignore[union-attr]  # released: it lets go of the file
    with closing(gateway(run.path)) as again:
        run.serves(again, "broken; a new Gateway serves once the fn returns")


def worker_death(run: Run) -> None:
    db = gateway(run.path)
    run.write(db, 100)

    def boom(batch: object) -> None:
        raise RuntimeError("injected fault")

    db._worker.batches.run_batch = boom  # type: ignore[method-assign]
    run.call(lambda: db.execute("INSERT INTO acked VALUES (1)"))
    db.close()
    with closing(gateway(run.path)) as again:
        run.serves(again, "broken; a new Gateway serves")


FAULTS: list[tuple[str, Callable[[Run], None]]] = [
    ("disk full (max_page_count)", disk_full),
    ("WAL write fails at COMMIT", wal_failure("writes")),
    ("WAL fsync fails at COMMIT", wal_failure("syncs")),
    ("read fails (writer)", read_failure),
    ("WAL writes fail for 20 calls", writes_failing_for_a_while),
    ("I/O fails and reopening fails", reopen_impossible),
    ("outside lock past busy_timeout (0.2 s)", outside_lock),
    ("statement past its timeout (0.2 s)", past_deadline),
    ("statement past hang_timeout (0.5 s)", past_hang_timeout),
    ("transaction fn hangs (hang_timeout 1 s)", hung_fn),
    ("worker thread dies", worker_death),
]


def check_file(run: Run) -> tuple[int, str]:
    conn = apsw.Connection(run.path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        present = {r[0] for r in conn.execute("SELECT id FROM acked")}
        return len(run.acked - present), conn.execute("PRAGMA integrity_check").fetchall()[0][0]
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    bad = 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp, cell_load() as load:
        for k, (name, inject) in enumerate(FAULTS):
            run = Run(os.path.join(tmp, f"fault{k}.db"))
            try:
                inject(run)
            finally:
                VFS.faults.off()
            lost, integrity = check_file(run)
            bad += lost > 0 or integrity != "ok"
            rows.append((name, run.got, f"{run.answered_ms:,.0f}", run.after,
                         f"{lost} of {len(run.acked)}", integrity))
    header = ("fault", "the caller got", "answered in ms", "the gateway after",
              "acked rows lost", "integrity")
    print(f"apsw {apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}, "
          f"{os.cpu_count()} cpus; command: .venv/bin/python -m benchmarks.faults --markdown")
    print(f"{quiet_line([load])} (the times answered are the only figures it moves)\n")
    print_table(header, rows, args.markdown, left=2)
    VFS.unregister()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
