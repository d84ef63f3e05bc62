"""Power-loss campaign: cut the power under a writing gateway, N times, and check what survived.

Run from the repository root::

    .venv/bin/python -m benchmarks.power_loss --cuts 1000 --synchronous FULL --seed 1
    .venv/bin/python -m benchmarks.power_loss --cuts 1000 --synchronous NORMAL --seed 1

kill -9 cannot tell ``FULL`` from ``NORMAL``: the kernel keeps what a killed
process wrote. A power cut loses what was not yet synced, so this campaign
simulates one with an apsw VFS shim (``benchmarks/vfs/power.py`` PowerVFS) that keeps each
file's durable image (as of its last xSync) apart from what was written since,
as SQLite's own crash tests do.

Each cut runs in a forked child: it opens a :class:`~sqlite_gateway.Gateway`
through the shim on the current file set and runs a mixed load from
``--threads`` threads (``execute`` of one row and of a pair of rows in one
string, ``executemany`` of a pair, ``transaction`` and ``submit_transaction``
of a pair plus a tally update, ``submit`` of a few rows then ``flush()``, and
``bulk`` of a few dozen rows). A caller records an id only after its call
returned (write-behind: after ``flush()`` returned and its future said
committed). After a random delay the child cuts the power: every later write
blocks, and at that same instant it copies the list of acknowledged ids. It
rebuilds the file set from what survived, in one of two modes:

- ``drop``: every write since a file's last sync is lost;
- ``torn``: each unsynced 512- or 4096-byte unit survives or not at random
  (torn and reordered writes); unsynced truncates too;

and in both, the ``-shm`` is lost. Then the child exits (its threads with it).
The parent opens a copy of the rebuilt set with plain apsw and checks:

- ``PRAGMA integrity_check`` is ``ok`` (else the file counts as corrupt);
- every id acknowledged before the cut is present (a pair counts only whole);
- no partial transaction: every pair has both rows or none, and the tally the
  transaction fns keep equals the number of their pairs.

The next cut starts from the rebuilt set (so SQLite's recovery of a torn WAL is
exercised each time); every ``--chain`` cuts a fresh database begins. At
``NORMAL`` an acknowledged write may be lost; what is lost is counted once, in
the cut that lost it. It prints one row per mode: cuts, acknowledged writes,
lost (total, mean and max per cut), corrupt files, partial transactions; and
exits 1 on any corrupt file, partial transaction or child failure, and at
FULL or EXTRA on any lost write. Linux and macOS only (it forks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import apsw

# Run as a script from a checkout: the library and the shim (a test helper) importable.
from .harness import print_table
from .vfs.power import MODES, PowerVFS, copy_file_set

from sqlite_gateway import Gateway

SCHEMA = """
CREATE TABLE singles(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload BLOB);
CREATE TABLE pairs(id INTEGER NOT NULL, half INTEGER NOT NULL, kind TEXT NOT NULL,
                   payload BLOB, PRIMARY KEY (id, half));
CREATE TABLE tally(k TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO tally VALUES ('fn', 0);
"""
FN_KINDS = ("transaction", "submit_transaction")  # the pairs the tally counts
CUT_SPAN = 10**9  # ids: cut (within its chain), thread and a counter never collide
THREAD_SPAN = 10**7
OPS_PER_THREAD = 1_000_000  # bounded loop; the cut comes long before
CALL_TIMEOUT = 30.0
CHILD_DEADLINE = 120.0  # a child that has not finished by then is killed and reported
AUTOCHECKPOINTS = (8, 64, 1000)  # WAL pages; small ones put checkpoints under the cuts
SECTORS = (512, 4096)
# Most cuts land just before a random one of the next IO_SPREAD writes or syncs
# (inside a commit or a checkpoint); the rest at the instant the delay ends.
AT_IO = 0.8
IO_SPREAD = 64


# -- the child: load, cut, rebuild -------------------------------------------------


class _Acks:
    """Ids acknowledged to their callers, appended under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.singles: list[int] = []
        self.pairs: list[int] = []
        self.errors: list[str] = []

    def add(self, singles: Sequence[int] = (), pairs: Sequence[int] = ()) -> None:
        with self._lock:
            self.singles.extend(singles)
            self.pairs.extend(pairs)

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def snapshot(self) -> dict[str, list[Any]]:
        with self._lock:
            return {"singles": list(self.singles), "pairs": list(self.pairs),
                    "errors": list(self.errors)}


def _payload(rng: random.Random) -> bytes:
    # Mostly small rows, now and then one past a page (an overflow chain), so a
    # commit spans several pages and a torn write can land inside one.
    return rng.randbytes(5000 if rng.random() < 0.02 else rng.choice((8, 40, 200)))


def _pair_fn(conn: Any, ident: int, kind: str, payload: bytes) -> None:
    """Two rows of one pair and the tally, in one transaction."""
    conn.execute("INSERT INTO pairs VALUES (?, 1, ?, ?)", (ident, kind, payload))
    conn.execute("UPDATE tally SET n = n + 1 WHERE k = 'fn'")
    conn.execute("INSERT INTO pairs VALUES (?, 2, ?, ?)", (ident, kind, payload))


def _load(db: Gateway, acks: _Acks, base: int, seed: int) -> None:
    """One thread of the load; an id is recorded only after its call returned."""
    rng = random.Random(seed)
    ident = base
    try:
        for _ in range(OPS_PER_THREAD):
            ident += 64
            op = rng.randrange(8)
            payload = _payload(rng)
            if op == 0:
                db.execute("INSERT INTO singles VALUES (?, 'execute', ?)", (ident, payload))
                acks.add(singles=[ident])
            elif op == 1:
                db.execute("INSERT INTO pairs VALUES (:id, 1, 'execute', :p);"
                           " INSERT INTO pairs VALUES (:id, 2, 'execute', :p)",
                           {"id": ident, "p": payload})
                acks.add(pairs=[ident])
            elif op == 2:
                db.executemany("INSERT INTO pairs VALUES (?, ?, 'executemany', ?)",
                               [(ident, 1, payload), (ident, 2, payload)])
                acks.add(pairs=[ident])
            elif op == 3:
                db.transaction(_pair_fn, ident, "transaction", payload)
                acks.add(pairs=[ident])
            elif op == 4:
                ids = [ident + k for k in range(rng.randint(1, 5))]
                futures = [db.submit("INSERT INTO singles VALUES (?, 'submit', ?)", (i, payload))
                           for i in ids]
                db.flush()
                if all(f.done() and f.result(0).rowcount == 1 for f in futures):
                    acks.add(singles=ids)
            elif op == 5:
                future = db.submit_transaction(_pair_fn, ident, "submit_transaction", payload)
                db.flush()
                future.result(0)
                acks.add(pairs=[ident])
            else:
                ids = [ident + k for k in range(rng.randint(5, 60))]
                changed = db.bulk("INSERT INTO singles VALUES (?, 'bulk', ?)",
                                  [(i, payload[:40]) for i in ids])
                assert changed == len(ids), (changed, len(ids))
                acks.add(singles=ids)
    except BaseException as exc:  # reported by the parent; there should be none before the cut
        acks.error(f"{type(exc).__name__}: {exc}")


@dataclasses.dataclass
class CutPlan:
    """One cut's settings, drawn by the parent so a seed replays the campaign."""

    index: int  # within its chain (ids are unique per chain)
    synchronous: str
    mode: str
    sector: int
    delay: float  # seconds of load before the cut
    autocheckpoint: int
    threads: int
    seed: int
    at_io: int = 0  # >0: cut just before the at_io-th write/sync after the delay; 0: at once
    ignore_syncs: bool = False


def child_main(plan: CutPlan, live_db: str, out_db: str, result_path: str) -> None:
    """Run the load on ``live_db`` through the shim, cut, rebuild into ``out_db``,
    write a JSON result; never returns (``os._exit``)."""
    code = 1
    try:
        vfs = PowerVFS(f"power-{os.getpid()}", ignore_syncs=plan.ignore_syncs)
        acks = _Acks()
        db = Gateway(live_db, vfs=vfs.name, synchronous=plan.synchronous,
                     autocheckpoint=plan.autocheckpoint, timeout=CALL_TIMEOUT).start()
        for k in range(plan.threads):
            threading.Thread(target=_load, daemon=True,
                             args=(db, acks, plan.index * CUT_SPAN + k * THREAD_SPAN,
                                   plan.seed * 100 + k)).start()
        time.sleep(plan.delay)
        if plan.at_io:
            vfs.arm(plan.at_io, acks.snapshot)
            cut = vfs.wait_cut(CALL_TIMEOUT)
            if cut is None:
                raise RuntimeError(f"no write came within {CALL_TIMEOUT} s to cut at")
        else:
            cut = vfs.power_cut(acks.snapshot)
        # From here the gateway's threads are frozen in their next write; only
        # this thread runs, against the Cut (never against the live files).
        rng = random.Random(plan.seed)
        cut.materialise(live_db, out_db, plan.mode, rng, plan.sector)
        real = {os.path.basename(path)[len(os.path.basename(live_db)):] or "db": len(ops)
                for path, (_, ops) in cut.files.items()}
        result = dict(cut.value, pending=real, syncs=vfs.syncs)  # type: ignore[arg-type]
        with open(result_path, "w") as f:
            json.dump(result, f)
        code = 0
    except BaseException:
        with open(result_path + ".err", "w") as f:
            f.write(traceback.format_exc())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- the parent: plans, children, checks ---------------------------------------------


@dataclasses.dataclass
class Check:
    """What one look at a rebuilt file set found."""

    integrity: str = "ok"  # integrity_check's first line(s) ("ok" when intact)
    lost: set[int] = dataclasses.field(default_factory=set)  # acknowledged ids missing
    partial: int = 0  # pairs with one row, plus 1 if the tally disagrees
    rows: int = 0  # singles plus whole pairs present

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.lost and not self.partial


def check_database(path: str, singles: set[int], pairs: set[int]) -> Check:
    """Open ``path`` with plain apsw (running WAL recovery) and check it.

    Acknowledged ids are (singles, pairs). A file SQLite cannot read counts as
    corrupt, with every acknowledged id lost.
    """
    everything = singles | pairs
    try:
        conn = apsw.Connection(path)
    except apsw.Error as exc:
        return Check(integrity=f"cannot open: {exc}", lost=everything)
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        check = Check(integrity="ok" if verdict == ["ok"] else "; ".join(map(str, verdict[:3])))
        present = {row[0] for row in conn.execute("SELECT id FROM singles")}
        halves = dict(conn.execute("SELECT id, count(*) FROM pairs GROUP BY id").fetchall())
        tally = conn.execute("SELECT n FROM tally WHERE k = 'fn'").fetchall()[0][0]
        fn_pairs = conn.execute(
            f"SELECT count(*) FROM pairs WHERE half = 2 AND kind IN {FN_KINDS!r}").fetchall()[0][0]
    except apsw.Error as exc:  # e.g. CorruptError while reading, or a table gone
        return Check(integrity=f"{type(exc).__name__}: {exc}", lost=everything)
    finally:
        conn.close()
    whole = {ident for ident, n in halves.items() if n == 2}
    check.partial = sum(1 for n in halves.values() if n != 2) + (tally != fn_pairs)
    check.lost = (singles - present) | (pairs - whole)
    check.rows = len(present) + len(whole)
    return check


def new_database(path: str) -> None:
    """A fresh database in WAL mode with the schema, fully durable (checkpointed, closed)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(SCHEMA)
    conn.close()


@dataclasses.dataclass
class Row:
    """The figures of one (synchronous, mode) pair."""

    synchronous: str
    mode: str
    cuts: int = 0
    acknowledged: int = 0  # ids acknowledged before their cut (a pair counts once)
    lost: list[int] = dataclasses.field(default_factory=list)  # per cut
    corrupt: int = 0  # cuts whose rebuilt file failed integrity_check
    partial: int = 0  # partial transactions seen, summed over cuts
    unsynced: int = 0  # cuts that found unsynced writes (in a commit or a checkpoint)
    mid_checkpoint: int = 0  # cuts with unsynced writes to the database file itself
    child_errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def lost_total(self) -> int:
        return sum(self.lost)

    def as_dict(self) -> dict[str, Any]:
        return {"synchronous": self.synchronous, "mode": self.mode, "cuts": self.cuts,
                "acknowledged": self.acknowledged, "lost": self.lost_total,
                "lost_mean": self.lost_total / self.cuts if self.cuts else 0.0,
                "lost_max": max(self.lost, default=0), "cuts_with_loss": sum(
                    1 for n in self.lost if n), "corrupt": self.corrupt,
                "partial": self.partial, "unsynced": self.unsynced,
                "mid_checkpoint": self.mid_checkpoint, "child_errors": self.child_errors[:5]}


def _run_child(plan: CutPlan, live_db: str, out_db: str, result_path: str) -> dict[str, Any]:
    """Fork one cut; return its JSON result, or raise RuntimeError with its failure."""
    for path in (result_path, result_path + ".err"):
        if os.path.exists(path):
            os.remove(path)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child_main(plan, live_db, out_db, result_path)  # never returns
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeError(f"cut child {pid} still running after {CHILD_DEADLINE} s")
        time.sleep(0.005)
    if os.path.exists(result_path + ".err"):
        with open(result_path + ".err") as f:
            raise RuntimeError(f.read()[-1500:])
    if not os.path.exists(result_path):
        raise RuntimeError(f"cut child {pid} wrote no result (wait status {status})")
    with open(result_path) as f:
        return json.load(f)  # type: ignore[no-any-return]


def run_campaign(cuts: int, *, synchronous: str = "FULL", mode: str = "both",
                 seed: int = 0, threads: int = 4, chain: int = 10, max_delay: float = 0.3,
                 sector: int | None = None, autocheckpoint: int | None = None,
                 ignore_syncs: bool = False,
                 workdir: str | None = None, progress: bool = False) -> dict[str, Row]:
    """Run ``cuts`` power cuts; return a :class:`Row` per mode.

    ``mode`` "both" alternates drop and torn. ``sector`` None draws 512 or
    4096 per cut; ``autocheckpoint`` None draws one of AUTOCHECKPOINTS per cut.
    Call only from a process with no other threads (it forks).
    """
    modes = MODES if mode == "both" else (mode,)
    rows = {m: Row(synchronous, m) for m in modes}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-power-") as tmp:
        base = workdir or tmp
        dirs = {name: os.path.join(base, name) for name in ("start", "live", "out", "check")}
        for d in dirs.values():
            os.makedirs(d, exist_ok=True)
        start, live, out, check_db = (os.path.join(dirs[n], "app.db")
                                      for n in ("start", "live", "out", "check"))
        result_path = os.path.join(base, "result.json")
        singles: set[int] = set()
        pairs: set[int] = set()
        for i in range(cuts):
            if i % chain == 0:
                new_database(start)
                singles, pairs = set(), set()
            plan = CutPlan(index=i % chain, synchronous=synchronous, mode=modes[i % len(modes)],
                           sector=sector or rng.choice(SECTORS),
                           delay=rng.uniform(0.0, max_delay),
                           autocheckpoint=autocheckpoint or rng.choice(AUTOCHECKPOINTS),
                           threads=threads,
                           seed=rng.randrange(2**31), ignore_syncs=ignore_syncs,
                           at_io=rng.randint(1, IO_SPREAD) if rng.random() < AT_IO else 0)
            row = rows[plan.mode]
            row.cuts += 1
            copy_file_set(start, live)
            try:
                result = _run_child(plan, live, out, result_path)
            except RuntimeError as exc:
                row.child_errors.append(f"cut {i}: {exc}")
                new_database(start)  # start the chain over; nothing to check
                singles, pairs = set(), set()
                continue
            if result["errors"]:
                row.child_errors.append(f"cut {i}: {result['errors'][:3]}")
            new_singles, new_pairs = set(result["singles"]), set(result["pairs"])
            row.acknowledged += len(new_singles) + len(new_pairs)
            singles |= new_singles
            pairs |= new_pairs
            row.unsynced += any(result["pending"].values())
            row.mid_checkpoint += result["pending"].get("db", 0) > 0
            copy_file_set(out, check_db)
            check = check_database(check_db, singles, pairs)
            row.lost.append(len(check.lost))
            row.corrupt += check.integrity != "ok"
            row.partial += check.partial
            # A write lost here is counted once: later cuts start without it.
            singles -= check.lost
            pairs -= check.lost
            if check.integrity != "ok":
                new_database(start)  # a corrupt file cannot carry the chain on
                singles, pairs = set(), set()
            else:
                copy_file_set(out, start)
            if progress:
                print(f"cut {i + 1}/{cuts} {plan.mode:4} sector {plan.sector} "
                      f"delay {plan.delay:.3f} s io {plan.at_io} ckpt {plan.autocheckpoint}: "
                      f"+{len(new_singles) + len(new_pairs)} acked, unsynced "
                      f"{result['pending']}, lost {len(check.lost)}, partial {check.partial}, "
                      f"integrity {check.integrity}", file=sys.stderr, flush=True)
    return rows


def table(rows: dict[str, Row], markdown: bool = False) -> None:
    # "cuts in a commit": cuts that found unsynced writes (mid-commit or
    # mid-checkpoint); "in a checkpoint": unsynced writes to the database file.
    head = ("synchronous", "mode", "cuts", "in a commit", "in a checkpoint",
            "acknowledged writes", "lost", "lost/cut mean", "lost/cut max", "cuts with loss",
            "corrupt files", "partial transactions")
    body = []
    for row in rows.values():
        d = row.as_dict()
        body.append((row.synchronous, row.mode, f"{row.cuts:,}", f"{row.unsynced:,}",
                     f"{row.mid_checkpoint:,}", f"{row.acknowledged:,}", f"{d['lost']:,}",
                     f"{d['lost_mean']:.1f}", f"{d['lost_max']:,}", f"{d['cuts_with_loss']:,}",
                     str(row.corrupt), str(row.partial)))
    print_table(head, body, markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", type=int, default=1000, help="power cuts (default 1000)")
    parser.add_argument("--synchronous", default="FULL", type=str.upper,
                        choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    parser.add_argument("--mode", default="both", choices=(*MODES, "both"),
                        help="drop unsynced writes, tear them by sector, or alternate (default)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the whole campaign")
    parser.add_argument("--threads", type=int, default=4, help="caller threads in each child")
    parser.add_argument("--chain", type=int, default=10,
                        help="cuts that carry one database on before a fresh one (default 10)")
    parser.add_argument("--max-delay", type=float, default=0.3,
                        help="longest load before a cut, s (default 0.3; drawn from 0 up)")
    parser.add_argument("--sector", type=int, choices=SECTORS, default=None,
                        help="unit of a torn write (default: 512 or 4096, drawn per cut)")
    parser.add_argument("--autocheckpoint", type=int, default=None,
                        help="the gateway's autocheckpoint in WAL pages (default: 8, 64 or "
                             "1000, drawn per cut); at NORMAL it bounds what a cut can lose")
    parser.add_argument("--ignore-syncs", action="store_true",
                        help="a disk that ignores fsync: shows that the checks catch loss")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON only")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if (args.cuts < 1 or args.threads < 1 or args.chain < 1 or args.max_delay < 0
            or (args.autocheckpoint is not None and args.autocheckpoint < 1)):
        parser.error("need --cuts, --threads, --chain, --autocheckpoint >= 1 "
                     "and --max-delay >= 0")
    if not hasattr(os, "fork"):
        parser.error("this campaign forks one child per cut: it needs os.fork (Linux, macOS)")
    if args.seed is None:
        args.seed = random.randrange(2**31)
    began = time.monotonic()
    rows = run_campaign(args.cuts, synchronous=args.synchronous, mode=args.mode,
                        seed=args.seed, threads=args.threads, chain=args.chain,
                        max_delay=args.max_delay, sector=args.sector,
                        autocheckpoint=args.autocheckpoint,
                        ignore_syncs=args.ignore_syncs, progress=not args.quiet)
    seconds = time.monotonic() - began
    if args.json:
        print(json.dumps({"seed": args.seed, "seconds": seconds,
                          "rows": [row.as_dict() for row in rows.values()]}))
    else:
        print(f"power-loss campaign: synchronous={args.synchronous}, mode {args.mode}, "
              f"{args.threads} threads, load 0-{args.max_delay:g} s before each cut, "
              f"chain {args.chain}, autocheckpoint "
              f"{args.autocheckpoint or '/'.join(map(str, AUTOCHECKPOINTS))}, seed {args.seed}"
              + (", syncs IGNORED by the disk" if args.ignore_syncs else ""))
        table(rows, args.markdown)
        print(f"total time: {seconds:.1f} s")
        for row in rows.values():
            for error in row.child_errors[:5]:
                print(f"child error ({row.mode}): {error}")
    durable = args.synchronous in ("FULL", "EXTRA") and not args.ignore_syncs
    bad = any(row.corrupt or row.partial or row.child_errors or (durable and row.lost_total)
              for row in rows.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
