"""Randomized history checker: many callers, random faults, then the file must agree.

In the spirit of Jepsen and of SQLite's own fault-injection tests. Each history:

1. picks a profile from its seed (threads, asyncio tasks, ``inline``, ``readers``,
   ``read_mode``, ``synchronous``, a sync delay) and the faults it will inject;
2. runs threads (and an asyncio task group over
   :class:`~sqlite_gateway.integrations.asyncio.AsyncGateway`) that call every door
   (execute, a multi-statement execute, executemany, transaction, submit,
   submit_transaction, post, bulk, flush, reads, write blocks, savepoints,
   snapshots) with random priorities and
   deadlines, while a scheduler injects faults (I/O errors and slow syncs from
   :class:`benchmarks.vfs.fault.FaultVFS`, a fn that hangs past ``hang_timeout``, worker
   death, ``close()``, asyncio cancellation; ``kill -9`` of a child process that
   runs the whole history);
3. records every call: an intent line before it, an outcome line after the
   caller got its answer (``history_run.Recorder``, fsync'd appends, so a killed
   child's log survives), the outcome judged by :func:`history_check.classify`
   from the answer alone;
4. reads the final file in a fresh gateway and checks it
   (:func:`history_check.check`).

The parts: :mod:`benchmarks.history_run` (the profile, the recorder, the fault
scheduler), :mod:`benchmarks.history_calls` (the operation vocabulary),
:mod:`benchmarks.history_check` (what an answer means; the check of the file),
:class:`benchmarks.vfs.fault.FaultVFS` (the fault-injection VFS); this module runs
histories, checks them, and prints the figures.

Run from the repository root::

    .venv/bin/python -m benchmarks.history --histories 200 --seed 1
    .venv/bin/python -m benchmarks.history --histories 1 --seed 57   # replay one

History ``i`` of a run uses seed ``S + i``; a violation prints that seed.
The same seed replays the same profile, faults and operation choices; thread
interleavings differ from run to run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any

from sqlite_gateway import Gateway
from sqlite_gateway.processlock import SUFFIX as LOCK_SUFFIX
from sqlite_gateway.processlock import ProcessLock

from . import history_check as hc
from .history_calls import ANSWER_BOUND, Caller
from .history_run import FAULT_KINDS, Profile, Run, draw_profile, fault_vfs


# -- the final look, the kill -9 form, the campaign ---------------------------------


def read_file(path: str) -> tuple[dict[int, int], dict[int, int], str]:
    """(row id -> op, counter -> value, integrity_check) read by a fresh gateway."""
    with Gateway(path, readers=0, inline=False, timeout=ANSWER_BOUND) as db:
        integrity = "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check").rows)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema").rows}
        if "rows" not in tables:
            return {}, {}, integrity
        present = dict(db.execute("SELECT id, op FROM rows").rows)
        counters = dict(db.execute("SELECT k, n FROM counters").rows)
    return present, counters, integrity


@dataclasses.dataclass
class Outcome:
    """What one history came to."""

    profile: Profile
    ops: int
    outcomes: Counter[str]
    faults: Counter[str]
    violations: list[hc.Violation]
    may_there: Counter[str]
    excerpt: list[str]
    whys: Counter[str] = dataclasses.field(default_factory=Counter)  # "door: why" counts


def verify(profile: Profile, path: str, log_path: str, faults: Counter[str],
           found_here: list[hc.Violation] | None = None) -> Outcome:
    """Check the file against the log (and ``found_here``, the parent's own
    findings); an excerpt of the log around each violation."""
    with open(log_path, "rb") as f:
        lines = [json.loads(line) for line in f.read().split(b"\n") if line.strip()]
    ops, found = hc.load(e for e in lines)
    found += found_here or []
    present, counters, integrity = read_file(path)
    violations, may_there = hc.check(ops, present, counters, integrity)
    violations = found + violations
    excerpt: list[str] = []
    for v in violations[:3]:
        around = [_short(e) for e in lines if e.get("op") == v.op] if v.op else []
        excerpt.append(f"{v.kind} op {v.op}: {v.detail}")
        excerpt += ["    " + a for a in around[:4]]
    outcomes = Counter(op.outcome or "none" for op in ops.values())
    whys = Counter(f"{op.door}: {op.why or 'no-answer'}" for op in ops.values())
    return Outcome(profile, len(ops), outcomes, faults, violations, may_there, excerpt, whys)


def _short(entry: dict[str, Any]) -> str:
    """A log line for an excerpt, its row list cut short."""
    rows = entry.get("rows")
    if rows and len(rows) > 3:
        entry = {**entry, "rows": f"{rows[:3]} +{len(rows) - 3}"}
    return json.dumps(entry)


def process_lock_left(path: str) -> list[hc.Violation]:
    """After a kill -9: the dead child's process lock must be free at once (the
    kernel drops a flock with its holder), or every later writer would wait."""
    if not os.path.exists(path + LOCK_SUFFIX):
        return []  # killed before its writer opened
    lock = ProcessLock(path)
    lock.open()
    try:
        if lock.acquire(5.0):
            lock.release()
            return []
    finally:
        lock.close()
    return [hc.Violation("process-lock-left", None, "the killed child's process lock was "
                         "still held 5 s after it died")]


def run_history(profile: Profile, workdir: str, doors: tuple[str, ...] = Caller.DOORS,
                interrupted: str = hc.NOT) -> Outcome:
    """Run one history (in this process, or in a child killed with SIGKILL) and check it."""
    path = os.path.join(workdir, f"h{profile.seed}.db")
    log_path = path + ".log"
    faults: Counter[str] = Counter()
    found_here: list[hc.Violation] = []
    if "kill" in profile.faults:
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.history", "--child",
                                  path, log_path, json.dumps(dataclasses.asdict(profile)),
                                  "--doors", ",".join(doors), "--interrupted", interrupted],
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(
                                     __file__))), stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            # "running" (or "" if it died first: then no kill), within a bound.
            if select.select([child.stdout], [], [], ANSWER_BOUND)[0]:
                child.stdout.readline()
            child.wait(random.Random(profile.seed).uniform(0.0, profile.duration))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            faults["kill"] += 1
        finally:
            child.wait(ANSWER_BOUND)
            child.stdout.close()  # type: ignore[union-attr]
        found_here = process_lock_left(path)
        with open(log_path, "rb") as f:
            faults.update(json.loads(line)["kind"] for line in f.read().split(b"\n")
                          if b'"e": "fault"' in line)
    else:
        run = Run(profile, path, log_path, doors, interrupted)
        try:
            run.play()
        finally:
            run.rec.close()
        faults = run.rec.faults
    outcome = verify(profile, path, log_path, faults, found_here)
    for suffix in ("", "-wal", "-shm", ".log", LOCK_SUFFIX):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return outcome


@dataclasses.dataclass
class Campaign:
    """Figures over many histories."""

    histories: int = 0
    ops: int = 0
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    faults: Counter[str] = dataclasses.field(default_factory=Counter)
    may_there: Counter[str] = dataclasses.field(default_factory=Counter)
    failed: list[Outcome] = dataclasses.field(default_factory=list)
    whys: Counter[str] = dataclasses.field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.histories += 1
        self.ops += outcome.ops
        self.outcomes.update(outcome.outcomes)
        self.faults.update({k: v for k, v in outcome.faults.items() if v})
        self.may_there.update(outcome.may_there)
        self.whys.update(outcome.whys)
        if outcome.violations:
            self.failed.append(outcome)


def campaign(histories: int, seed: int, allowed: tuple[str, ...] = FAULT_KINDS,
             threads: int | None = None, inline: bool | None = None,
             tasks: int | None = None, every: bool = False,
             duration: float | None = None, doors: tuple[str, ...] = Caller.DOORS,
             interrupted: str = hc.NOT, progress: bool = False) -> Campaign:
    """Run histories with seeds ``seed .. seed + histories - 1``; return the figures."""
    fault_vfs()  # registered before any gateway names it
    result = Campaign()
    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="sqlite-gateway-history-", dir=root)
    try:
        for i in range(histories):
            profile = draw_profile(seed + i, allowed, threads, inline, tasks, every, duration)
            outcome = run_history(profile, workdir, doors, interrupted)
            result.add(outcome)
            if progress and (outcome.violations or (i + 1) % 10 == 0):
                print(f"history {i + 1}/{histories} (seed {profile.seed}): {outcome.ops} ops, "
                      f"{len(outcome.violations)} violations", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def report(result: Campaign, command: str) -> str:
    """The long form's printout: what ran, what was found (each with its seed)."""
    by_outcome = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    lines = [f"command: {command}",
             f"load average (1 min): {os.getloadavg()[0]:.2f}",
             f"histories checked: {result.histories}",
             f"operations: {result.ops} ({by_outcome})",
             "faults injected: " + (", ".join(f"{k} {result.faults[k]}" for k in FAULT_KINDS
                                               if result.faults[k]) or "none"),
             "'may' outcomes found committed: " + (", ".join(
                 f"{k} {v}" for k, v in sorted(result.may_there.items())) or "none"),
             "write blocks, savepoints: " + (", ".join(
                 f"{k} {v}" for k, v in sorted(result.whys.items())
                 if "block" in k or "savepoint" in k) or "none"),
             f"violations: {sum(len(o.violations) for o in result.failed)} in "
             f"{len(result.failed)} histories"]
    labels = Counter(f"{v.kind} (answer: {v.why or '-'}; caller: {o.profile.door_path(v.op)})"
                     for o in result.failed for v in o.violations)
    lines += [f"  {n} {label}" for label, n in sorted(labels.items())]
    for outcome in result.failed[:10]:
        p = outcome.profile
        lines.append(f"  seed {p.seed}: threads {p.threads}, tasks {p.tasks}, inline "
                     f"{p.inline}, readers {p.readers}/{p.read_mode}, {p.synchronous}, "
                     f"faults {','.join(p.faults) or '-'}")
        lines += ["    " + x for x in outcome.excerpt]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--histories", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="first history's seed")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"fault kinds allowed (default all: {','.join(FAULT_KINDS)})")
    parser.add_argument("--threads", type=int, default=None, help="fix the thread count")
    parser.add_argument("--inline", choices=("on", "off"), default=None,
                        help="fix the in-place option (default: drawn per history)")
    parser.add_argument("--tasks", type=int, default=None, help="fix the asyncio task count")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of calls per history (default: drawn, 0.3-1.0)")
    parser.add_argument("--every", action="store_true",
                        help="inject every allowed fault kind in every history")
    parser.add_argument("--doors", default=",".join(Caller.DOORS),
                        help=f"the threads' doors (default all: {','.join(Caller.DOORS)})")
    parser.add_argument("--interrupted", choices=(hc.NOT, hc.MAY), default=hc.NOT,
                        help="what RequestTimeout(interrupted=True) means: not committed "
                             "(default), or may have committed")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # the kill -9 form: run one history here until the parent kills us
        path, log_path, spec = args.child
        fields = json.loads(spec)
        fields["faults"] = [k for k in fields["faults"] if k != "kill"]
        run = Run(Profile(**fields), path, log_path, tuple(args.doors.split(",")),
                  args.interrupted)
        run.play(started=lambda: print("running", flush=True))
        return 0
    allowed = tuple(k for k in args.faults.split(",") if k)
    unknown = set(allowed) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    doors = tuple(d for d in args.doors.split(",") if d)
    if not doors or set(doors) - set(Caller.DOORS):
        parser.error(f"--doors: a comma-separated subset of {','.join(Caller.DOORS)}")
    seed = random.randrange(2**31) if args.seed is None else args.seed
    result = campaign(args.histories, seed, allowed, args.threads,
                      None if args.inline is None else args.inline == "on",
                      args.tasks, args.every, args.duration, doors, args.interrupted,
                      progress=not args.quiet)
    command = " ".join(["python -m benchmarks.history", *(argv or sys.argv[1:])])
    if args.seed is None:
        command += f" --seed {seed}"
    print(report(result, command))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
