"""Where several processes lose: a timeline of the process lock, batch by batch.

``python -m benchmarks.multiprocess_profile`` runs the rows of
``benchmarks.multiprocess`` (1 and 4 processes by default, ``process_lock``
on) with each child's writer instrumented: every acquire of the process lock
(asked, got, whether it had to wait or let a waiting process go first), when
the helper's blocking ``flock()`` returned, every batch taken (size, age of
its oldest request), BEGIN, COMMIT (start, end), the release and the answers
(start, end). With ``--reference-batch N`` it also runs 1 process whose
batches are capped at N (what each of several processes can make at most:
its own threads). The children's ``time.monotonic()`` is one system-wide clock
(CLOCK_MONOTONIC), so the parent merges their timelines and prints:

- the lock's duty: the share of the run some writer held it, and the share
  it lay free while another writer waited for it (hand-off time);
- a hold, step by step: lock -> batch taken -> BEGIN done -> COMMIT started
  -> COMMIT done -> released, and the answers after COMMIT (microseconds);
- hand-off: from one process's release to the next holder's acquire, when
  that holder had been waiting, split into the kernel's wake-up of the
  helper thread and the helper's hand-over to the writer;
- CPU: the processes' CPU time per view, and cores kept busy;
- queue age: how long a batch's oldest request had waited when the batch was
  taken (after the lock wait, if any: the wait is what grows the batch);
- the order the waiters got the lock in (how often one process took it twice
  in a row while another waited);
- COMMITs over 1 ms (fsync outliers, WAL checkpoints; ``--autocheckpoint 0``
  takes the checkpoints out to tell them apart).

The instrumentation costs a few microseconds per step; compare rows of one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from .harness import percentile, print_header, print_table
from .quiet import load_average, load_fields, quiet_line


def instrument() -> list[tuple[Any, ...]]:
    """Wrap the writer's steps (in a child, before its Gateway starts); return the
    list the events go into: (kind, monotonic times..., extra)."""
    from sqlite_gateway import processlock
    from sqlite_gateway import worker as worker_module
    from sqlite_gateway.batch import Batches
    from sqlite_gateway.processlock import ProcessLock
    from sqlite_gateway.requestqueue import RequestQueue
    from sqlite_gateway.writeconn import WriteConn

    events: list[tuple[Any, ...]] = []
    log = events.append
    clock = time.monotonic
    acquire, release = ProcessLock.acquire, ProcessLock.release

    def timed_acquire(self: ProcessLock, timeout: float) -> bool:
        waits, yields = self.waits, getattr(self, "yields", 0)
        asked = clock()
        got = acquire(self, timeout)
        log(("acquire", asked, clock(), got, self.waits > waits,
             getattr(self, "yields", 0) > yields))
        return got

    def timed_release(self: ProcessLock) -> None:
        if getattr(self, "held", True):  # (a second release does nothing)
            log(("release", clock()))
        release(self)

    take = RequestQueue.take

    def timed_take(self: RequestQueue, batch_max: int) -> Any:
        batch = take(self, batch_max)
        if isinstance(batch, list) and batch:
            log(("take", clock(), len(batch), min(r.enqueued for r in batch)))
        return batch

    run_exec = WriteConn.exec

    def timed_exec(self: Any, sql: str) -> None:
        began = clock()
        run_exec(self, sql)
        log(("begin" if sql.startswith("BEGIN") else "commit" if sql.startswith("COMMIT")
             else "other", began, clock()))

    answer = Batches.answer

    def timed_answer(self: Any, requests: list[Any]) -> None:
        began, n = clock(), len(requests)
        answer(self, requests)
        log(("answer", began, clock(), n))

    run_inline = worker_module.Worker.run_inline

    def timed_inline(self: Any, request: Any, deadline: float | None) -> bool:
        log(("inline", clock(), 1, request.enqueued))
        return run_inline(self, request, deadline)

    class TimedFcntl:
        """processlock's fcntl module, noting when the helper's blocking flock() returns."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_fcntl, name)

        def flock(self, fd: int, operation: int) -> None:
            real_fcntl.flock(fd, operation)
            if operation == real_fcntl.LOCK_EX:
                log(("kernel", clock()))

    real_fcntl = getattr(processlock, "fcntl")  # noqa: B009 (a module global, replaced)
    setattr(processlock, "fcntl", TimedFcntl())  # noqa: B010
    ProcessLock.acquire = timed_acquire  # type: ignore[method-assign]
    ProcessLock.release = timed_release  # type: ignore[method-assign]
    RequestQueue.take = timed_take  # type: ignore[method-assign]
    WriteConn.exec = timed_exec  # type: ignore[method-assign]
    Batches.answer = timed_answer  # type: ignore[method-assign]
    worker_module.Worker.run_inline = timed_inline  # type: ignore[method-assign]
    return events


def holds(events: list[list[Any]], pid: int, start: float, end: float) -> list[dict[str, Any]]:
    """One process's events cut into lock holds (acquire ... release), inside [start, end]."""
    out: list[dict[str, Any]] = []
    hold: dict[str, Any] | None = None
    inline: list[Any] | None = None  # a caller's run_inline, before its acquire
    kernel = 0.0  # when the helper's flock() last returned
    for event in events:
        kind = event[0]
        if kind == "inline":
            inline = event
        elif kind == "kernel":
            kernel = event[1]
        elif kind == "acquire":
            hold = {"pid": pid, "asked": event[1], "got": event[2], "ok": event[3],
                    "waited": event[4], "yielded": event[5], "inline": inline is not None,
                    "kernel": kernel if event[4] and event[1] <= kernel <= event[2] else None}
            if inline is not None:  # its batch of one is taken as the lock is got
                hold.update(take=event[2], n=1, oldest=inline[3])
                inline = None
        elif kind == "answer" and out and "answer" not in out[-1] and (
                hold is None or "commit" not in hold):
            out[-1]["answer"] = (event[1], event[2])  # after its release (the lock let go
            # at COMMIT): the hold it belongs to has ended
        elif hold is None:
            continue
        elif kind == "take":
            hold.setdefault("take", event[1])
            hold["n"] = hold.get("n", 0) + event[2]
            hold.setdefault("oldest", event[3])
        elif kind in ("begin", "commit", "answer"):
            hold.setdefault(kind, (event[1], event[2]))
        elif kind == "release":
            hold["released"] = event[1]
            if hold["ok"] and "take" in hold and start <= hold["got"] and hold["released"] <= end:
                out.append(hold)
            hold = None
    return out


def analyse(per_process: list[list[list[Any]]], start: float, end: float) -> dict[str, Any]:
    """The merged timeline's figures (see the module docstring)."""
    all_holds = sorted((h for pid, events in enumerate(per_process)
                        for h in holds(events, pid, start, end)), key=lambda h: h["got"])
    wall = end - start
    us = 1e6

    def stat(values: list[float]) -> tuple[float, float, float]:
        values = sorted(values)
        if not values:
            return (0.0, 0.0, 0.0)
        return (sum(values) / len(values) * us, percentile(values, 0.5) * us,
                percentile(values, 0.99) * us)

    held = sum(h["released"] - h["got"] for h in all_holds)
    steps: dict[str, tuple[float, float, float]] = {}
    pairs: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("lock -> batch taken", lambda h: h["take"] - h["got"]),
        ("batch taken -> BEGIN done", lambda h: h["begin"][1] - h["take"]),
        ("BEGIN done -> COMMIT start", lambda h: h["commit"][0] - h["begin"][1]),
        ("COMMIT (fsync, checkpoint)", lambda h: h["commit"][1] - h["commit"][0]),
        ("COMMIT done -> released", lambda h: h["released"] - h["commit"][1]),
        ("whole hold", lambda h: h["released"] - h["got"]),
        ("COMMIT done -> answers done", lambda h: h["answer"][1] - h["commit"][1]),
    ]
    full = [h for h in all_holds if "begin" in h and "commit" in h and "answer" in h]
    for name, fn in pairs:
        steps[name] = stat([fn(h) for h in full])
    # Hand-off: a waiting holder's acquire after the previous holder (another process) let go.
    gaps, repeats, contended, kernel_gaps, helper_gaps = [], 0, 0, [], []
    for i in range(1, len(all_holds)):
        prev, cur = all_holds[i - 1], all_holds[i]
        if cur["waited"] and cur["pid"] != prev["pid"]:
            gaps.append(cur["got"] - prev["released"])
            if cur["kernel"] is not None:
                kernel_gaps.append(cur["kernel"] - prev["released"])
                helper_gaps.append(cur["got"] - cur["kernel"])
        # prev's process took it again although another had asked before cur got it.
        if cur["pid"] == prev["pid"] and any(
                h["pid"] != cur["pid"] and h["asked"] < cur["got"]
                for h in all_holds[i + 1:i + 8]):
            repeats += 1
        contended += cur["waited"]
    waits = [h["got"] - h["asked"] for h in all_holds if h["waited"]]
    age = [h["take"] - h["oldest"] for h in all_holds]
    slow_commits = [h["commit"][1] - h["commit"][0] for h in full
                    if h["commit"][1] - h["commit"][0] > 1e-3]
    sizes = [h["n"] for h in all_holds]
    return {
        "holds_s": len(all_holds) / wall, "batch": sum(sizes) / max(1, len(sizes)),
        "held": held / wall, "handoff_share": sum(gaps) / wall,
        "steps": steps, "handoff": stat(gaps),
        "kernel": stat(kernel_gaps), "helper": stat(helper_gaps),
        "wait": stat(waits), "age": stat(age),
        "contended": contended / max(1, len(all_holds)), "repeats": repeats,
        "slow_commits": len(slow_commits), "slow_commit_ms": max(slow_commits, default=0) * 1e3,
        "inline": sum(1 for h in all_holds if h.get("inline")),
        "yielded": sum(1 for h in all_holds if h["yielded"]) / max(1, len(all_holds)),
    }


def run_row(processes: int, threads: int, seconds: float, synchronous: str,
            busy_timeout: float, batch_max: int = 256,
            autocheckpoint: int = 1000, directory: str | None = None) -> dict[str, Any]:
    from .multiprocess import _measure
    before = load_average()
    result = _measure(processes, threads, seconds, synchronous, busy_timeout, True,
                      profile=True, batch_max=batch_max, autocheckpoint=autocheckpoint,
                      directory=directory)
    result.update(batch_max=batch_max, seconds=seconds)
    load = load_fields(before, load_average())
    result.update(load_before=load["load_before"], load_after=load["load_after"],
                  busy_load=load["busy"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,4")
    parser.add_argument("--threads", type=int, default=32, help="in total, split evenly")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--busy-timeout", type=float, default=5.0)
    parser.add_argument("--reference-batch", type=int, default=0, metavar="N",
                        help="also run 1 process with batches of at most N requests (the "
                             "batch each of the processes can make: threads / processes)")
    parser.add_argument("--autocheckpoint", type=int, default=1000,
                        help="each writer's wal_autocheckpoint in pages (0: none in the run)")
    parser.add_argument("--dir", help="where the database goes (default: the temporary "
                                      "folder; /dev/shm: a RAM disk, no fsync cost)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    specs = [(int(p), 256) for p in args.processes.split(",")]
    if args.reference_batch:
        specs.insert(1, (1, args.reference_batch))
    rows = [run_row(p, args.threads, args.seconds, args.synchronous, args.busy_timeout, b,
                    args.autocheckpoint, args.dir) for p, b in specs]
    from .multiprocess import machine_lines
    print_header(machine_lines(
        f"the multiprocess page view, process_lock on, synchronous={args.synchronous}, "
        f"{args.threads} threads in all, {args.seconds:g} s per row, instrumented",
        args.dir), args.markdown)
    print()
    print(quiet_line([{"load_before": r["load_before"], "load_after": r["load_after"],
                       "busy": r["busy_load"]} for r in rows]))
    print()
    head = ["figure", *[f"{r['processes']} process{'es' if r['processes'] > 1 else ''}"
                        + (f", batch <= {r['batch_max']}" if r["batch_max"] != 256 else "")
                        for r in rows]]
    profiles = [r["profile"] for r in rows]

    def line(name: str, fmt: Callable[[dict[str, Any]], str]) -> list[str]:
        return [name, *[fmt(p) for p in profiles]]

    table = [
        ["views/s", *[f"{r['ops_s']:,.0f}" for r in rows]],
        ["p50 / p99 ms", *[f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}" for r in rows]],
        ["CPU of the processes: cores busy", *[f"{r['cpu_s'] / r['seconds']:.2f}" for r in rows]],
        ["CPU per view, us", *[f"{r['cpu_s'] / max(1, r['ops_s'] * r['seconds']) * 1e6:.0f}"
                               for r in rows]],
        line("lock holds (batches) /s", lambda p: f"{p['holds_s']:,.0f}"),
        line("requests per batch", lambda p: f"{p['batch']:.1f}"),
        line("lock held, share of the run", lambda p: f"{p['held']:.0%}"),
        line("lock free while one waits, share", lambda p: f"{p['handoff_share']:.0%}"),
        line("acquires that waited", lambda p: f"{p['contended']:.0%}"),
    ]
    def step_line(step: str) -> list[str]:
        return line(f"{step}, us mean / p50 / p99",
                    lambda p: "{:,.0f} / {:,.0f} / {:,.0f}".format(*p["steps"][step]))

    for step in profiles[0]["steps"]:
        table.append(step_line(step))
    table += [
        line("hand-off (release -> next acquire), us mean / p50 / p99",
             lambda p: "{:,.0f} / {:,.0f} / {:,.0f}".format(*p["handoff"])),
        line("  release -> the helper's flock() returns, us mean / p50 / p99",
             lambda p: "{:,.0f} / {:,.0f} / {:,.0f}".format(*p["kernel"])),
        line("  helper -> the writer has it, us mean / p50 / p99",
             lambda p: "{:,.0f} / {:,.0f} / {:,.0f}".format(*p["helper"])),
        line("wait for the lock, us mean / p99",
             lambda p: f"{p['wait'][0]:,.0f} / {p['wait'][2]:,.0f}"),
        line("oldest request's age when its batch is taken, us mean / p99",
             lambda p: f"{p['age'][0]:,.0f} / {p['age'][2]:,.0f}"),
        line("same process twice while another waited", lambda p: str(p["repeats"])),
        line("acquires that let a waiting process go first",
             lambda p: f"{p['yielded']:.0%}"),
        line("COMMITs over 1 ms (max ms)",
             lambda p: f"{p['slow_commits']} ({p['slow_commit_ms']:.1f})"),
        line("batches run in a caller's thread", lambda p: str(p["inline"])),
        ["load", *[f"{r['load_before']:.2f}->{r['load_after']:.2f}"
                   + (" BUSY" if r["busy_load"] else "") for r in rows]],
    ]
    print_table(head, table, args.markdown, left=1)


if __name__ == "__main__":
    main()
