"""One power cut, in a forked child: a gateway writing through PowerVFS, the cut, what survived.

The power-loss campaign (``python -m benchmarks.power_loss``) draws a
:class:`CutPlan` per cut and calls :func:`run_cut`, which forks a child that
opens a :class:`~sqlite_gateway.Gateway` through the power-loss VFS
(``benchmarks/vfs/power.py``) on the current file set, runs a mixed load from
``plan.threads`` threads (``execute`` of one row and of a pair of rows in one
string, ``executemany`` of a pair, ``transaction`` and ``submit_transaction``
of a pair plus a tally update, ``submit`` of a few rows then ``flush()``, and
``bulk`` of a few dozen rows), cuts the power after ``plan.delay`` (or just
before one of the next writes or syncs), copies the ids acknowledged by then at
that same instant, and rebuilds the surviving file set into another path. A
caller records an id only after its call returned (write-behind: after
``flush()`` returned and its future said committed). The child reports in a JSON
file and exits; its threads, frozen in their next write, die with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from .vfs.power import PowerVFS

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


def run_cut(plan: CutPlan, live_db: str, out_db: str, result_path: str) -> dict[str, Any]:
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
