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
lost (total, mean and max per cut), corrupt files, partial transactions, the
1-minute load average as its first cut began and after its last (BUSY when it
was >= 1.0 at the start; a loaded machine moves where the cuts land, not what
is checked), and one line saying whether the run was quiet; and
exits 1 on any corrupt file, partial transaction or child failure, and at
FULL or EXTRA on any lost write. Linux and macOS only (it forks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

import apsw

from .harness import print_table
from .quiet import load_average, load_fields, load_text, quiet_line
from .power_cut import FN_KINDS, SCHEMA, CutPlan, run_cut
from .vfs.power import MODES, copy_file_set

AUTOCHECKPOINTS = (8, 64, 1000)  # WAL pages; small ones put checkpoints under the cuts
SECTORS = (512, 4096)
# Most cuts land just before a random one of the next IO_SPREAD writes or syncs
# (inside a commit or a checkpoint); the rest at the instant the delay ends.
AT_IO = 0.8
IO_SPREAD = 64


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
    # The 1-minute load average as its first cut began and after its last (quiet.py).
    load: dict[str, Any] = dataclasses.field(default_factory=dict)

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
                "mid_checkpoint": self.mid_checkpoint, "child_errors": self.child_errors[:5],
                **self.load}


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
            before = row.load.get("load_before", load_average())
            copy_file_set(start, live)
            try:
                result = run_cut(plan, live, out, result_path)
            except RuntimeError as exc:
                row.load = load_fields(before, load_average())
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
            row.load = load_fields(before, load_average())
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
            "corrupt files", "partial transactions", "load")
    body = []
    for row in rows.values():
        d = row.as_dict()
        body.append((row.synchronous, row.mode, f"{row.cuts:,}", f"{row.unsynced:,}",
                     f"{row.mid_checkpoint:,}", f"{row.acknowledged:,}", f"{d['lost']:,}",
                     f"{d['lost_mean']:.1f}", f"{d['lost_max']:,}", f"{d['cuts_with_loss']:,}",
                     str(row.corrupt), str(row.partial), load_text(row.load)))
    print_table(head, body, markdown)
    print(quiet_line([row.load for row in rows.values()]))


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
