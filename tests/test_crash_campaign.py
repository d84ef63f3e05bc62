"""The crash campaign (benchmarks/crash_campaign.py), short: a few SIGKILLs of a
writing child, then integrity, no acknowledged write lost, no partial pair.

The full campaign (100 trials) is the script; this runs 5. The checks are
also shown to catch what they look for, on a database damaged on purpose.
"""

from __future__ import annotations

import apsw
import pytest
from benchmarks import crash_campaign as campaign


@pytest.mark.timeout(90)
def test_five_kills_lose_nothing_acknowledged_and_leave_no_partial_pair(tmp_path):
    summary = campaign.run_campaign(5, seed=6, threads=4, min_run=0.1, max_run=0.5,
                                    workdir=str(tmp_path))
    assert summary.child_errors == []
    assert summary.trials == 5
    assert summary.acknowledged > 500  # the children really wrote before each kill
    assert (summary.lost, summary.partial, summary.integrity_failures) == (0, 0, 0)
    assert summary.final is not None and summary.final.ok
    assert summary.ok


def _database(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.execute(campaign.SCHEMA)
    conn.execute("INSERT INTO acked VALUES (1, 'execute', NULL)")
    conn.executemany("INSERT INTO pairs VALUES (?, ?, 'transaction', NULL)", [(8, 1), (8, 2)])
    return conn


def test_the_checks_catch_a_lost_write_and_a_partial_pair(tmp_path):
    path = str(tmp_path / "damaged.db")
    conn = _database(path)
    assert campaign.check_database(path, {1}, {8}).ok
    conn.execute("INSERT INTO pairs VALUES (7, 1, 'transaction', NULL)")  # half 2 is missing
    conn.close()
    check = campaign.check_database(path, {1, 2}, {7, 8, 9})
    assert (check.lost, check.partial, check.integrity) == (3, 1, "ok")  # 2, 7 (a half), 9
    assert not check.ok


def test_the_checks_catch_a_damaged_file(tmp_path):
    path = str(tmp_path / "damaged.db")
    conn = _database(path)
    conn.executemany("INSERT INTO acked VALUES (?, 'execute', zeroblob(300))",
                     [(i,) for i in range(2, 200)])
    page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(path, "r+b") as f:  # scribble over the third page, a b-tree page
        f.seek(2 * page_size)
        f.write(b"\xff" * page_size)
    check = campaign.check_database(path, {1}, {8})
    assert check.integrity != "ok" and not check.ok


def test_the_ack_log_ignores_a_torn_last_line(tmp_path):
    log = tmp_path / "acked.log"
    log.write_bytes(b"a 1\np 2\na 3\np 4")
    assert campaign.read_acks(str(log)) == ({1, 3}, {2})
