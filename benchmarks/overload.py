"""Ten times more writes than the writer can take: what is refused, what is kept.

Run from the repository root::

    .venv/bin/python -m benchmarks.overload             # 3 s / 6 s / 3 s phases
    .venv/bin/python -m benchmarks.overload --quick     # 1 s / 2 s / 1 s
    .venv/bin/python -m benchmarks.overload --markdown  # the table as Markdown (README)

Options: ``--factor 10`` (offered load in the overload phase, as a multiple of the
measured capacity), ``--queue-size 10000`` (the gateway's default), ``--rows 300``
(rows each write inserts: the writer's cost per request), ``--producers 4``,
``--no-wait-quiet``, ``--quiet-below 0.9``, ``--quiet-max-wait 90`` (before the
capacity run and before the phases, wait until the 1-minute load average is
under 0.9, at most 90 s: see ``quiet.py``).

First the capacity C: committed writes per second while one thread submits
as fast as it can for 3 s (1 s with --quick), the queue never empty (the
writer's best: full batches). Then, on a fresh gateway
and database, write-behind producers (``db.submit``, open loop: they keep
their pace whatever happens to earlier requests) offer, phase by phase:

- ``before``: 0.5 x C;
- ``overload``: ``--factor`` x C;
- ``after``: 0.5 x C again.

Printed per phase: offered, accepted, refused (``Overloaded``) and committed per
second; the latency of accepted writes (submit to commit, p50/p99/max); how
long a refusal took (p99, microseconds: "at once"); the most requests queued
at any sample (every 20 ms); the process's resident memory at the end of the
phase, and its load average before -> after (BUSY when it started at >= 1.0;
one line says whether the run was quiet). Then the recovery: how long after
the overload ended the queue was
empty again. A check at the end: every accepted write is in the database and
no refused one is (exit status 1 otherwise). One process, one run: the phases
are consecutive on purpose (recovery is what is measured).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import Future

import apsw


from .harness import machine_lines, percentile, positive, print_header, print_table, whole
from .quiet import add_quiet_options, cell_load, load_text, quiet_line, quiet_wait

from sqlite_gateway import Gateway, Overloaded
from sqlite_gateway.result import Result

WRITE = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)"
         " INSERT INTO t(op, i) SELECT ?, i FROM c")
SAMPLE_EVERY = 0.02  # seconds between two looks at the queue length
TICK = 0.001  # producers' pacing step


def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def schema(db: Gateway) -> None:
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, op INTEGER NOT NULL, i INTEGER)")


def capacity(seconds: float, rows: int) -> float:
    """Committed writes/s with the queue never empty: write-behind, as fast as
    one thread can submit, for about ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp, Gateway(os.path.join(tmp, "cap.db"),
                                                       queue_size=1_000_000) as db:
        schema(db)
        began = time.monotonic()
        sent = 0
        while time.monotonic() - began < seconds:
            for _ in range(1000):
                db.submit(WRITE, (rows, -1))
            sent += 1000
        db.flush(timeout=300)
        return sent / (time.monotonic() - began)


class Phase:
    """What the producers saw in one phase. The lists grow by list.append
    (atomic under the GIL); ``offered`` is added to under the producers' lock
    as each producer ends; refused and accepted are derived from them."""

    def __init__(self, name: str, rate: float, seconds: float) -> None:
        self.name, self.rate, self.seconds = name, rate, seconds
        self.offered = 0
        self.latencies: list[float] = []
        self.refusals: list[float] = []
        self.max_queued = 0
        self.rss_mb = 0.0
        self.committed = 0
        self.ended = 0.0
        self.load: dict[str, object] = {}  # load average before/after (quiet.cell_load)

    @property
    def refused(self) -> int:
        return len(self.refusals)

    @property
    def accepted(self) -> int:
        return self.offered - self.refused


def produce(db: Gateway, phase: Phase, producers: int, rows: int, accepted: set[int],
            failed: list[int], next_op: list[int], lock: threading.Lock) -> None:
    per_thread = phase.rate / producers
    began = time.perf_counter()
    deadline = began + phase.seconds

    def producer() -> None:
        sent = 0
        while True:
            now = time.perf_counter()
            if now >= deadline:
                with lock:  # += on a shared int is not atomic across threads
                    phase.offered += sent
                return
            due = int((now - began) * per_thread) - sent
            for _ in range(due):
                with lock:
                    op = next_op[0]
                    next_op[0] += 1
                start = time.perf_counter()
                try:
                    future = db.submit(WRITE, (rows, op))
                except Overloaded:
                    phase.refusals.append(time.perf_counter() - start)
                    continue
                finally:
                    sent += 1
                accepted.add(op)  # only the number: the benchmark keeps no futures
                future.add_done_callback(lambda f, s=start, op=op: done(f, s, op))
            time.sleep(TICK)

    def done(future: Future[Result], start: float, op: int) -> None:
        phase.latencies.append(time.perf_counter() - start)
        if future.exception() is not None:
            failed.append(op)

    threads = [threading.Thread(target=producer) for _ in range(producers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        phase.max_queued = max(phase.max_queued, db.stats()["queued"])
        time.sleep(SAMPLE_EVERY)
    for thread in threads:
        thread.join(60)
    phase.ended = time.monotonic()
    phase.rss_mb = rss_mb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=positive, default=10.0)
    parser.add_argument("--queue-size", type=whole, default=10_000)
    parser.add_argument("--rows", type=whole, default=300)
    parser.add_argument("--producers", type=whole, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    quiet = quiet_wait(args)
    scale = 1 / 3 if args.quick else 1.0
    print_header(machine_lines(f"factor {args.factor:g}, queue_size {args.queue_size:,}, "
                               f"{args.rows} rows per write, {args.producers} producers"
                               + (", --quick" if args.quick else "")), markdown=True)
    with cell_load(quiet) as cap_load:
        cap = capacity(2.0 * scale * 1.5, args.rows)
    print(f"- capacity: {cap:,.0f} writes/s ({args.rows} rows each; write-behind, the queue "
          f"never empty); queue_size {args.queue_size:,}; load {load_text(cap_load)}")
    phases = [Phase("before", cap * 0.5, 3 * scale), Phase("overload", cap * args.factor,
              6 * scale), Phase("after", cap * 0.5, 3 * scale)]
    accepted_ops: set[int] = set()
    errors: list[int] = []
    rss_start = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "overload.db")
        with Gateway(path, queue_size=args.queue_size) as db:
            schema(db)
            next_op, lock = [0], threading.Lock()
            drained_after = None
            for phase in phases:
                # Only the first phase waits for quiet: the phases follow each other on
                # purpose (the recovery from the overload is measured).
                with cell_load(quiet if phase is phases[0] else None) as phase.load:
                    produce(db, phase, args.producers, args.rows, accepted_ops, errors,
                            next_op, lock)
                    phase.committed = db.stats()["requests"]  # cumulative; differenced below
                    if phase.name == "overload":
                        # Recovery: how long until the queue is empty again (bounded).
                        for _ in range(int(60 / SAMPLE_EVERY)):
                            if db.stats()["queued"] == 0:
                                drained_after = time.monotonic() - phase.ended
                                break
                            time.sleep(SAMPLE_EVERY)
            db.flush(timeout=120)
        conn = apsw.Connection(path)
        stored = {row[0] for row in conn.execute("SELECT DISTINCT op FROM t WHERE op >= 0")}
        conn.close()
    lost = accepted_ops - stored
    phantom = stored - accepted_ops
    previous = 0
    head = ("phase", "offered/s", "accepted/s", "refused/s", "committed/s", "p50 ms",
            "p99 ms", "max ms", "refusal p99 us", "max queued", "RSS MB", "load")
    rows = []
    for phase in phases:
        lat = sorted(phase.latencies)
        ref = sorted(phase.refusals)
        done = phase.committed - previous
        previous = phase.committed
        rows.append((phase.name, f"{phase.offered / phase.seconds:,.0f}",
                     f"{phase.accepted / phase.seconds:,.0f}",
                     f"{phase.refused / phase.seconds:,.0f}", f"{done / phase.seconds:,.0f}",
                     f"{percentile(lat, 0.5) * 1000:.1f}", f"{percentile(lat, 0.99) * 1000:.1f}",
                     f"{(lat[-1] if lat else 0) * 1000:.1f}",
                     f"{percentile(ref, 0.99) * 1e6:.0f}" if ref else "-",
                     f"{phase.max_queued:,}", f"{phase.rss_mb:.0f}", load_text(phase.load)))
    print(quiet_line([cap_load, *(phase.load for phase in phases)]))
    print(quiet.line())
    print()
    print_table(head, rows, args.markdown)
    drained = "never (60 s)" if drained_after is None else f"{drained_after:.2f} s"
    print(f"queue empty again {drained} after the overload ended; RSS at start "
          f"{rss_start:.0f} MB")
    print(f"accepted {len(accepted_ops):,}, failed after acceptance {len(errors)}, "
          f"missing from the database {len(lost)}, refused yet stored {len(phantom)}")
    return 1 if lost or phantom or errors else 0


if __name__ == "__main__":
    sys.exit(main())
