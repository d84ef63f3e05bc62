"""Power loss, simulated as SQLite's own crash tests do (benchmarks/vfs/power.py), short form.

The shim is checked on its own first (what survives a cut: synced bytes only,
or a random subset of sectors; deletes, truncates, new files, the -shm), then
the campaign (benchmarks/power_loss.py) runs a few cuts per setting under a
gateway: at FULL nothing acknowledged is lost, and no setting leaves a corrupt
file or a partial transaction. The campaign is also shown to fail when it
should: with syncs off, or a disk that ignores them, acknowledged writes go.
The long form (1,000 cuts per setting) is the script.
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid

import apsw
import pytest
from conftest import run_benchmark

from benchmarks import power_loss as campaign
from benchmarks.vfs.power import PowerVFS

SECTOR = 512
OPEN_DB = apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_READWRITE
ANSWER_S = 10  # a bound that detects a hang, not a timing goal


@pytest.fixture
def vfs():
    shim = PowerVFS(f"power-{uuid.uuid4().hex[:8]}")
    try:
        yield shim
    finally:
        shim.resume()
        shim.unregister()


def _open(vfs: PowerVFS, path: str):
    return vfs.xOpen(path, [OPEN_DB, 0])


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- the shim -----------------------------------------------------------------------


def test_drop_keeps_only_what_was_synced_while_the_file_itself_has_everything(vfs, tmp_path):
    path = str(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(b"A" * 1024)  # there before the VFS opened it: durable
    file = _open(vfs, path)
    file.xWrite(b"B" * 512, 0)
    file.xSync(apsw.SQLITE_SYNC_NORMAL)
    file.xWrite(b"C" * 512, 512)
    file.xWrite(b"D" * 512, 1024)  # past the end
    cut = vfs.power_cut()
    assert cut.survivor(path, "drop", random.Random(0)) == b"B" * 512 + b"A" * 512
    assert _read(path) == b"B" * 512 + b"C" * 512 + b"D" * 512  # written through
    vfs.resume()
    file.xClose()


def test_torn_keeps_a_random_subset_of_sectors_each_old_or_new(vfs, tmp_path):
    path = str(tmp_path / "f")
    old = bytes(range(256)) * 2 * 64  # 64 sectors
    with open(path, "wb") as f:
        f.write(old)
    file = _open(vfs, path)
    file.xWrite(b"N" * len(old), 0)
    cut = vfs.power_cut()
    image = cut.survivor(path, "torn", random.Random(1), SECTOR)
    sectors = [image[k:k + SECTOR] for k in range(0, len(old), SECTOR)]
    kept = sum(s == b"N" * SECTOR for s in sectors)
    assert kept + sum(s == old[:SECTOR] for s in sectors) == 64  # never a mixed sector
    assert 0 < kept < 64
    vfs.resume()
    file.xClose()


def test_torn_writes_may_survive_out_of_order(vfs, tmp_path):
    path = str(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(b"O" * SECTOR)
    file = _open(vfs, path)
    file.xWrite(b"X" * SECTOR, 0)
    file.xWrite(b"Y" * SECTOR, 0)  # the later write to the same sector
    cut = vfs.power_cut()
    seen = {cut.survivor(path, "torn", random.Random(seed), SECTOR)[:1] for seed in range(40)}
    assert seen == {b"O", b"X", b"Y"}  # X alone survives when Y is lost: reordered
    vfs.resume()
    file.xClose()


def test_a_new_file_needs_a_sync_and_a_delete_is_durable_at_once(vfs, tmp_path):
    new, synced, gone = (str(tmp_path / n) for n in ("new", "synced", "gone"))
    with open(gone, "wb") as f:
        f.write(b"G" * 100)
    for path in (new, synced):
        file = _open(vfs, path)
        file.xWrite(b"W" * 100, 0)
        if path == synced:
            file.xSync(apsw.SQLITE_SYNC_NORMAL)
        file.xClose()
    _open(vfs, gone).xClose()
    vfs.xDelete(gone, False)
    cut = vfs.power_cut()
    assert cut.survivor(new, "drop", random.Random(0)) is None
    assert cut.survivor(synced, "drop", random.Random(0)) == b"W" * 100
    assert cut.survivor(gone, "drop", random.Random(0)) is None
    assert cut.survivor(gone, "torn", random.Random(0)) is None


def test_a_truncate_is_durable_only_after_a_sync(vfs, tmp_path):
    path = str(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(b"T" * 4096)
    file = _open(vfs, path)
    file.xTruncate(1024)
    assert vfs.power_cut().survivor(path, "drop", random.Random(0)) == b"T" * 4096
    vfs.resume()
    file.xSync(apsw.SQLITE_SYNC_NORMAL)
    assert vfs.power_cut().survivor(path, "drop", random.Random(0)) == b"T" * 1024
    vfs.resume()
    file.xClose()


def test_a_disk_that_ignores_syncs_keeps_nothing_new(tmp_path):
    shim = PowerVFS(f"power-{uuid.uuid4().hex[:8]}", ignore_syncs=True)
    try:
        path = str(tmp_path / "f")
        file = _open(shim, path)
        file.xWrite(b"W" * 100, 0)
        file.xSync(apsw.SQLITE_SYNC_NORMAL)
        assert shim.power_cut().survivor(path, "drop", random.Random(0)) is None
        shim.resume()
        file.xClose()
    finally:
        shim.unregister()


def test_a_wal_database_comes_back_with_its_synced_commits_and_no_shm(vfs, tmp_path):
    path = str(tmp_path / "app.db")
    conn = apsw.Connection(path, vfs=vfs.name)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t(x)")
        for i in range(20):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("PRAGMA synchronous=OFF")  # commits from here are never synced
        for i in range(20, 30):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        cut = vfs.power_cut()
        assert os.path.exists(path + "-shm")
        for mode in ("drop", "torn"):
            rebuilt = str(tmp_path / f"{mode}.db")
            written = cut.materialise(path, rebuilt, mode, random.Random(3))
            assert rebuilt + "-shm" not in written and not os.path.exists(rebuilt + "-shm")
            check = apsw.Connection(rebuilt)
            try:
                assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                count, top = check.execute("SELECT count(*), max(x) FROM t").fetchall()[0]
            finally:
                check.close()
            assert count == top + 1 and 20 <= count <= 30  # a prefix of the commits
            if mode == "drop":
                assert count == 20
    finally:
        vfs.resume()
        conn.close()


def test_a_cut_freezes_every_writer_until_the_power_is_back(vfs, tmp_path):
    path = str(tmp_path / "f")
    file = _open(vfs, path)
    vfs.power_cut()
    wrote = threading.Event()

    def write():
        file.xWrite(b"late", 0)
        wrote.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert not wrote.wait(0.3)  # blocked: nothing reaches the disk after the cut
    assert _read(path) == b""
    vfs.resume()
    assert wrote.wait(ANSWER_S)
    writer.join(ANSWER_S)
    file.xClose()


def test_an_armed_cut_lands_just_before_the_chosen_write(vfs, tmp_path):
    path = str(tmp_path / "f")
    file = _open(vfs, path)
    vfs.arm(3, at_cut=lambda: "acks")
    file.xWrite(b"1", 0)
    file.xSync(apsw.SQLITE_SYNC_NORMAL)
    assert vfs.wait_cut(0) is None
    writer = threading.Thread(target=file.xWrite, args=(b"2", 1), daemon=True)
    writer.start()  # the third I/O: the cut comes first, then it blocks
    cut = vfs.wait_cut(ANSWER_S)
    assert cut is not None and cut.value == "acks"
    assert cut.survivor(path, "torn", random.Random(0)) == b"1"  # "2" never happened
    vfs.resume()
    writer.join(ANSWER_S)
    assert not writer.is_alive()
    file.xClose()


# -- the campaign's checks ---------------------------------------------------------


def _database(path: str) -> apsw.Connection:
    campaign.new_database(path)
    conn = apsw.Connection(path)
    conn.execute("INSERT INTO singles VALUES (1, 'execute', NULL)")
    conn.executemany("INSERT INTO pairs VALUES (?, ?, 'transaction', NULL)", [(8, 1), (8, 2)])
    conn.execute("UPDATE tally SET n = 1")
    return conn


def test_the_checks_catch_a_lost_write_a_partial_pair_and_a_wrong_tally(tmp_path):
    path = str(tmp_path / "damaged.db")
    conn = _database(path)
    assert campaign.check_database(path, {1}, {8}).ok
    conn.execute("INSERT INTO pairs VALUES (7, 1, 'executemany', NULL)")  # half 2 missing
    check = campaign.check_database(path, {1, 2}, {7, 8, 9})
    assert (check.lost, check.partial, check.integrity) == ({2, 7, 9}, 1, "ok")
    conn.execute("DELETE FROM pairs WHERE id = 7")
    conn.execute("UPDATE tally SET n = 2")  # a fn's tally update without its pair
    conn.close()
    assert campaign.check_database(path, {1}, {8}).partial == 1


def test_the_checks_catch_a_damaged_file(tmp_path):
    path = str(tmp_path / "damaged.db")
    conn = _database(path)
    conn.executemany("INSERT INTO singles VALUES (?, 'execute', zeroblob(300))",
                     [(i,) for i in range(2, 200)])
    page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(path, "r+b") as f:  # scribble over the third page, a b-tree page
        f.seek(2 * page_size)
        f.write(b"\xff" * page_size)
    check = campaign.check_database(path, {1}, {8})
    assert check.integrity != "ok" and not check.ok


# -- the campaign, short --------------------------------------------------------------


def _run(*args: str) -> dict:
    """The script in a child process (it forks one child per cut, which a test
    process with threads of its own must not do)."""
    done = run_benchmark("power_loss", "--json", "--quiet", "--threads", "3", *args,
                         timeout=120)
    assert done.stdout, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    report["returncode"] = done.returncode
    return report


def _acknowledged(report: dict) -> int:
    return sum(row["acknowledged"] for row in report["rows"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the campaign forks a child per cut")
def test_at_full_no_cut_loses_an_acknowledged_write_dropped_or_torn():
    report = _run("--cuts", "8", "--synchronous", "FULL", "--mode", "both", "--seed", "11")
    assert [(r["mode"], r["cuts"]) for r in report["rows"]] == [("drop", 4), ("torn", 4)]
    for row in report["rows"]:
        assert row["child_errors"] == []
        assert (row["lost"], row["corrupt"], row["partial"]) == (0, 0, 0), row
    assert _acknowledged(report) > 100  # the children really wrote before their cuts
    assert report["returncode"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the campaign forks a child per cut")
def test_at_normal_a_cut_may_lose_commits_but_never_corrupts_or_splits_one():
    report = _run("--cuts", "6", "--synchronous", "NORMAL", "--mode", "both", "--seed", "12")
    for row in report["rows"]:
        assert row["child_errors"] == []
        assert (row["corrupt"], row["partial"]) == (0, 0), row
    assert _acknowledged(report) > 100
    assert report["returncode"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the campaign forks a child per cut")
@pytest.mark.parametrize("args", [("--synchronous", "OFF"), ("--ignore-syncs",)],
                         ids=["synchronous-off", "disk-ignores-syncs"])
def test_the_campaign_sees_the_loss_when_nothing_is_synced(args):
    report = _run("--cuts", "3", "--mode", "drop", "--seed", "13", *args)
    (row,) = report["rows"]
    assert row["child_errors"] == []
    # Nothing after the fresh database reached the disk: every acknowledged write is lost.
    assert row["acknowledged"] > 0 and row["lost"] == row["acknowledged"]
