"""The history checker, short form: seeded random histories under faults, zero violations.

Each history runs threads and asyncio tasks that call every door of the gateway
while faults are injected (tight deadlines, slow syncs, I/O errors, a fn that
hangs past the watchdog, worker death, close(), cancellation, kill -9 of a
child), records what every caller was told, and checks the final file against
it: acknowledged writes there, refused or failed ones absent, nothing partial,
counters equal to the increments whose rows are there. The long form and its
figures: ``python -m benchmarks.history`` (docs/history.md).
"""

from __future__ import annotations

import pytest

from benchmarks import history
from benchmarks import history_check as hc

SEED = 20_000  # fixed: a failure names the history's seed, which replays it


@pytest.mark.timeout(300)
def test_random_histories_under_every_fault_kind_keep_every_promise():
    result = history.campaign(14, SEED)
    assert result.histories == 14 and result.ops > 1000
    assert {"deadline", "io", "close", "kill"} <= set(result.faults), result.faults
    assert not result.failed, history.report(result, f"campaign(14, {SEED})")


@pytest.mark.timeout(300)
def test_histories_with_the_writer_run_in_place_and_a_hanging_fn_keep_every_promise():
    """One caller at a time through the waiting doors, so the writer is idle and
    every call runs in place, the hanging fn included."""
    result = history.campaign(4, SEED + 100, ("hang", "deadline", "slow-sync"), threads=1,
                              inline=True, tasks=0, every=True,
                              doors=("execute", "executemany", "transaction", "read"))
    assert result.faults["hang"] == 4, result.faults
    assert not result.failed, history.report(result, f"campaign(4, {SEED + 100}, ...)")


@pytest.mark.timeout(300)
def test_histories_of_write_blocks_savepoints_and_snapshots_keep_every_promise():
    """The newer paths alone: write blocks (some held past hold_limit, some whose
    body or savepoint raises), transaction fns with a savepoint that raises,
    snapshots checked for one view and read-your-writes, async write blocks."""
    doors = ("write_block", "savepoint_transaction", "snapshot", "read", "execute")
    result = history.campaign(3, SEED + 200, ("hold", "deadline", "cancel"), every=True,
                              doors=doors)
    assert result.faults["hold"] > 0, result.faults
    done = {k.split(": ")[0] for k, v in result.whys.items() if k.endswith(": returned")}
    assert {"write-block", "savepoint-transaction"} <= done, result.whys
    assert any(k.endswith("block-expired") for k in result.whys), result.whys
    assert not result.failed, history.report(result, f"campaign(3, {SEED + 200}, ...)")


def _op(op, outcome, rows, ctr=None, door="transaction", never=()):
    return hc.Op(op, door, rows, ctr, outcome, never=list(never))


@pytest.mark.parametrize("ops, present, counters, kind", [
    ({1: _op(1, hc.ACK, [10, 11], (0, 2))}, {}, {0: 0}, "lost-ack"),
    ({1: _op(1, hc.NOT, [10])}, {10: 1}, {}, "kept-failed"),
    ({1: _op(1, hc.MAY, [10, 11])}, {10: 1}, {}, "partial"),
    ({1: _op(1, hc.ACK, [10], (0, 2))}, {10: 1}, {0: 3}, "counter"),
    ({1: _op(1, hc.MAY, [10], (0, 2))}, {}, {0: 2}, "counter"),
    ({}, {10: 1}, {}, "unknown-rows"),
    ({1: _op(1, hc.NOT, [10, 11, 12], door="bulk")}, {11: 1}, {}, "bulk-not-a-prefix"),
    ({1: _op(1, hc.ACK, [10], never=[13])}, {10: 1, 13: 1}, {}, "savepoint-kept"),
])
def test_the_checker_names_each_kind_of_broken_promise(ops, present, counters, kind):
    found, _ = hc.check(ops, present, counters, "ok")
    assert kind in {v.kind for v in found}


def test_an_expired_write_block_counts_as_nothing_kept():
    from sqlite_gateway import WriteBlockExpired
    assert hc.classify(WriteBlockExpired(0.05)) == (hc.NOT, "block-expired")


def test_the_checker_accepts_either_outcome_of_a_may_and_a_killed_call():
    ops = {1: _op(1, hc.MAY, [10, 11], (0, 2)), 2: _op(2, hc.MAY, [20], (0, 5)),
           3: _op(3, None, [30])}
    found, may_there = hc.check(ops, {10: 1, 11: 1, 30: 3}, {0: 2}, "ok")
    assert found == [] and sum(may_there.values()) == 2
