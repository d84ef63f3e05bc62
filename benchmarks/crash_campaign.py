"""Crash campaign: kill a writing gateway with SIGKILL, N times, and check what survived.

Run from the repository root::

    .venv/bin/python -m benchmarks.crash_campaign                # 100 trials
    .venv/bin/python -m benchmarks.crash_campaign --trials 10 --seed 7 --threads 16

Each trial starts a child process (this script with a hidden ``--child``
argument) that opens a :class:`~sqlite_gateway.Gateway` on the campaign's
database file (``synchronous`` FULL unless told otherwise) and runs a mixed
load from ``--threads`` threads: ``execute`` (one row; and a pair of rows in
one multi-statement string), ``executemany`` (a pair), ``transaction`` (a
pair), ``submit`` of a few rows then ``flush()``, and ``submit_transaction``
(a pair) then ``flush()``. The child appends each id to an acknowledgement
log only after the call that wrote it returned (for write-behind: after
``flush()`` returned and the future said the row committed). After a random
delay past the child's "running" line, the parent kills it with SIGKILL.

After each kill the parent checks a copy of the database file and its WAL
(the original is left for the next child, which must recover it: the same
file serves every trial, so recovery after a crash is exercised each time):

- ``PRAGMA integrity_check`` is ``ok``;
- every id acknowledged so far, in this trial or any earlier one, is present
  (a pair counts as present only with both halves);
- no partial transaction: every pair id has both rows or none.

It prints trials, acknowledged writes, lost, partial and integrity failures
(each must be 0), and exits 1 on any of them, or when a child failed on its
own (an error from the gateway under a plain load is a failure too).
After the last trial the original file itself is checked the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import Any

import apsw

# Run as a script from a checkout: make the library importable without installing it.

from .harness import child_env, non_negative, print_header, python_m, whole

from sqlite_gateway import Gateway

SCHEMA = """
CREATE TABLE IF NOT EXISTS acked(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload BLOB);
CREATE TABLE IF NOT EXISTS pairs(id INTEGER NOT NULL, half INTEGER NOT NULL, kind TEXT NOT NULL,
                                 payload BLOB, PRIMARY KEY (id, half));
"""
# Ids are unique across the whole campaign: trial, thread and a counter.
TRIAL_SPAN = 10**10
THREAD_SPAN = 10**8
OPS_PER_THREAD = 1_000_000  # bounded loop; the parent kills the child long before
CALL_TIMEOUT = 60.0  # one call's longest wait in the child
READY_TIMEOUT = 60.0  # how long the parent waits for the child's "running" line

# -- the child: the load ----------------------------------------------------------------


def _payload(rng: random.Random) -> bytes:
    # Mostly small rows, now and then one past a page (an overflow chain), so
    # that a commit spans several pages and the kill can land inside one; rare
    # enough that 100 trials stay near 100 MB.
    return rng.randbytes(5000 if rng.random() < 0.01 else rng.choice((8, 40, 120)))


def _pair_fn(conn: Any, ident: int, kind: str, payload: bytes) -> None:
    """The transaction fn: two rows of one pair, with a read between them."""
    conn.execute("INSERT INTO pairs VALUES (?, 1, ?, ?)", (ident, kind, payload))
    seen = conn.execute("SELECT count(*) FROM pairs WHERE id = ?", (ident,)).scalar()
    assert seen == 1
    conn.execute("INSERT INTO pairs VALUES (?, 2, ?, ?)", (ident, kind, payload))


class _AckLog:
    """Appends ``"<table> <id>\\n"`` lines, each with one unbuffered ``os.write``.

    No fsync: the parent reads the file after the child was killed, on the
    same running kernel, and a write() that returned is in the page cache,
    which SIGKILL does not touch. (A power cut would need fsync here, but
    this campaign does not simulate one.) One write per line on an O_APPEND
    descriptor keeps lines from different threads whole.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)

    def ack(self, table: str, ids: Iterable[int]) -> None:
        os.write(self._fd, b"".join(b"%s %d\n" % (table.encode(), i) for i in ids))


def _load(db: Gateway, log: _AckLog, base: int, seed: int, errors: list[str]) -> None:
    """One thread of the child's load; records an id only after its call returned."""
    rng = random.Random(seed)
    next_id = base
    try:
        for _ in range(OPS_PER_THREAD):
            op = rng.randrange(6)
            ident, next_id = next_id, next_id + 8
            payload = _payload(rng)
            if op == 0:
                db.execute("INSERT INTO acked VALUES (?, 'execute', ?)", (ident, payload))
                log.ack("a", [ident])
            elif op == 1:
                db.execute("INSERT INTO pairs VALUES (:id, 1, 'execute-pair', :p);"
                           " INSERT INTO pairs VALUES (:id, 2, 'execute-pair', :p)",
                           {"id": ident, "p": payload})
                log.ack("p", [ident])
            elif op == 2:
                db.executemany("INSERT INTO pairs VALUES (?, ?, 'executemany', ?)",
                               [(ident, 1, payload), (ident, 2, payload)])
                log.ack("p", [ident])
            elif op == 3:
                db.transaction(_pair_fn, ident, "transaction", payload)
                log.ack("p", [ident])
            elif op == 4:
                ids = [ident + k for k in range(rng.randint(1, 5))]
                futures = [db.submit("INSERT INTO acked VALUES (?, 'submit', ?)", (i, payload))
                           for i in ids]
                db.flush()
                for future in futures:
                    assert future.result(0).rowcount == 1
                log.ack("a", ids)
            else:
                future = db.submit_transaction(_pair_fn, ident, "submit_transaction", payload)
                db.flush()
                future.result(0)
                log.ack("p", [ident])
    except BaseException as exc:  # reported by the child's exit status; there should be none
        errors.append(f"{type(exc).__name__}: {exc}")


def child_main(path: str, ack_path: str, trial: int, threads: int, seed: int,
               synchronous: str) -> int:
    log = _AckLog(ack_path)
    db = Gateway(path, synchronous=synchronous, timeout=CALL_TIMEOUT).start()
    db.execute(SCHEMA)
    errors: list[str] = []
    workers = [threading.Thread(target=_load, daemon=True,
                                args=(db, log, trial * TRIAL_SPAN + k * THREAD_SPAN,
                                      seed * 1000 + k, errors))
               for k in range(threads)]
    for worker in workers:
        worker.start()
    print("running", flush=True)
    for worker in workers:
        worker.join()
    db.close()
    for error in errors[:5]:
        print(f"child error: {error}", file=sys.stderr, flush=True)
    return 1 if errors else 0


# -- the parent: trials and checks ----------------------------------------------------


@dataclasses.dataclass
class Check:
    """What one look at a database file found."""

    integrity: str = "ok"  # integrity_check's first line ("ok" when intact)
    lost: int = 0  # acknowledged ids missing (or with one half of a pair missing)
    partial: int = 0  # pair ids with exactly one row
    rows: int = 0  # single rows plus whole pairs present

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.lost and not self.partial


def read_acks(path: str) -> tuple[set[int], set[int]]:
    """The ids a child acknowledged: (single rows, pairs). A last line
    without its newline is ignored (never seen in practice: one write per line)."""
    singles: set[int] = set()
    pairs: set[int] = set()
    with open(path, "rb") as f:
        data = f.read()
    for line in data.split(b"\n")[:-1]:
        table, _, ident = line.partition(b" ")
        (singles if table == b"a" else pairs).add(int(ident))
    return singles, pairs


def check_database(path: str, singles: set[int], pairs: set[int]) -> Check:
    """Open ``path`` with apsw (running WAL recovery if needed) and check it.

    Call only when no other process has the file open. A file SQLite cannot
    read counts as an integrity failure, with every acknowledged id lost.
    """
    try:
        conn = apsw.Connection(path)
    except apsw.Error as exc:
        return Check(integrity=f"cannot open: {exc}", lost=len(singles) + len(pairs))
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        check = Check(integrity="ok" if verdict == ["ok"] else "; ".join(map(str, verdict[:3])))
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if not {"acked", "pairs"} <= tables:  # killed before the schema committed
            check.lost = len(singles) + len(pairs)
            return check
        present = {row[0] for row in conn.execute("SELECT id FROM acked")}
        halves: dict[int, int] = {row[0]: row[1] for row in conn.execute(
            "SELECT id, count(*) FROM pairs GROUP BY id")}
    except apsw.Error as exc:  # e.g. CorruptError while reading
        return Check(integrity=f"{type(exc).__name__}: {exc}", lost=len(singles) + len(pairs))
    finally:
        conn.close()
    whole = {ident for ident, n in halves.items() if n == 2}
    check.partial = sum(1 for n in halves.values() if n != 2)
    check.lost = len(singles - present) + len(pairs - whole)
    check.rows = len(present) + len(whole)
    return check


def check_copy(path: str, workdir: str, singles: set[int], pairs: set[int]) -> Check:
    """Check a copy of ``path`` and its WAL (not its -shm: the copy rebuilds
    its WAL index, as the next opener of the original will)."""
    copy = os.path.join(workdir, "check.db")
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(copy + suffix):
            os.remove(copy + suffix)
    shutil.copyfile(path, copy)
    if os.path.exists(path + "-wal"):
        shutil.copyfile(path + "-wal", copy + "-wal")
    return check_database(copy, singles, pairs)


@dataclasses.dataclass
class Summary:
    trials: int = 0
    acknowledged: int = 0  # ids acknowledged over all trials (a pair counts once)
    lost: int = 0  # summed over trials
    partial: int = 0
    integrity_failures: int = 0
    child_errors: list[str] = dataclasses.field(default_factory=list)
    final: Check | None = None  # the original file, after the last trial
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (not self.lost and not self.partial and not self.integrity_failures
                and not self.child_errors and (self.final is None or self.final.ok))


def run_trial(path: str, ack_path: str, trial: int, rng: random.Random, threads: int,
              min_run: float, max_run: float, synchronous: str) -> str | None:
    """Run one child and SIGKILL it; return an error text if it failed on its own."""
    command = python_m(__spec__.name, "--child", path, ack_path,
                       "--trial", str(trial), "--threads", str(threads),
                       "--seed", str(rng.randrange(2**31)), "--synchronous", synchronous)
    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env()) as child:
        try:
            ready = _readline(child, READY_TIMEOUT)
            if ready != "running":
                child.kill()
                child.wait(30)
                err.seek(0)
                return f"trial {trial}: child did not start ({ready!r}): {err.read()[-500:]}"
            try:
                code = child.wait(rng.uniform(min_run, max_run))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                child.wait(30)
                return None
            err.seek(0)
            return f"trial {trial}: child exited {code} before the kill: {err.read()[-500:]}"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)


def _readline(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's first stdout line, or '' if none came within ``timeout``."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0].strip() if line else ""


def run_campaign(trials: int, *, seed: int | None = None, threads: int = 8,
                 min_run: float = 0.05, max_run: float = 1.0, synchronous: str = "FULL",
                 workdir: str | None = None, progress: bool = False) -> Summary:
    """Run ``trials`` kill trials on one database file; return the figures."""
    rng = random.Random(seed)
    summary = Summary()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-crash-") as tmp:
        workdir = workdir or tmp
        path = os.path.join(workdir, "campaign.db")
        ack_path = os.path.join(workdir, "acked.log")
        singles: set[int] = set()
        pairs: set[int] = set()
        for trial in range(trials):
            error = run_trial(path, ack_path, trial, rng, threads, min_run, max_run, synchronous)
            if error is not None:
                summary.child_errors.append(error)
            new_singles, new_pairs = read_acks(ack_path) if os.path.exists(ack_path) else (
                set(), set())
            singles |= new_singles
            pairs |= new_pairs
            check = check_copy(path, tmp, singles, pairs)
            summary.trials += 1
            summary.lost += check.lost
            summary.partial += check.partial
            summary.integrity_failures += check.integrity != "ok"
            if progress:
                print(f"trial {trial + 1}/{trials}: +{len(new_singles) + len(new_pairs)} acked, "
                      f"rows {check.rows}, lost {check.lost}, partial {check.partial}, "
                      f"integrity {check.integrity}", file=sys.stderr, flush=True)
        summary.acknowledged = len(singles) + len(pairs)
        if trials:
            summary.final = check_database(path, singles, pairs)
    summary.seconds = time.monotonic() - began
    return summary


def report(summary: Summary, args: argparse.Namespace) -> list[tuple[str, str]]:
    final = summary.final
    return [
        ("crash campaign", f"SIGKILL after {args.min_run:g}-{args.max_run:g} s of load, "
                           f"{args.threads} threads, synchronous={args.synchronous}, "
                           f"seed {args.seed}"),
        ("trials", str(summary.trials)),
        ("acknowledged writes", f"{summary.acknowledged:,}"),
        ("lost", str(summary.lost)),
        ("partial", str(summary.partial)),
        ("integrity failures", str(summary.integrity_failures)),
        ("child errors", str(len(summary.child_errors))),
        ("final check of the file itself", "none" if final is None else
         "ok" if final.ok else repr(final)),
        # Rows committed whose answer never reached the log: the kill hit in flight.
        ("committed but not acknowledged (in flight at a kill)",
         "-" if final is None else f"{final.rows - summary.acknowledged:,}"),
        ("total time", f"{summary.seconds:.1f} s"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=whole, default=100, help="kills to run (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="seed for delays and loads")
    parser.add_argument("--threads", type=whole, default=8, help="writer threads in the child")
    parser.add_argument("--min-run", type=non_negative, default=0.05,
                        help="shortest load before the kill, s (default 0.05)")
    parser.add_argument("--max-run", type=non_negative, default=1.0,
                        help="longest load before the kill, s (default 1.0)")
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL", "EXTRA"))
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--child", nargs=2, metavar=("DB", "ACKLOG"), help=argparse.SUPPRESS)
    parser.add_argument("--trial", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child, trial=args.trial, threads=args.threads,
                          seed=args.seed or 0, synchronous=args.synchronous)
    if args.trials < 1 or args.threads < 1 or not 0 <= args.min_run <= args.max_run:
        parser.error("need --trials >= 1, --threads >= 1 and 0 <= --min-run <= --max-run")
    if args.seed is None:
        args.seed = random.randrange(2**31)
    summary = run_campaign(args.trials, seed=args.seed, threads=args.threads,
                           min_run=args.min_run, max_run=args.max_run,
                           synchronous=args.synchronous, progress=not args.quiet)
    print_header(report(summary, args), align=False)
    for error in summary.child_errors[:5]:
        print(error)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
