"""The fsync-delay VFS of the benchmarks (benchmarks/vfs/slow_sync.py SlowSyncVFS): opened by
name over a RAM directory, every sync costs at least its delay, nothing else changes."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator

import apsw
import pytest

from benchmarks.vfs.slow_sync import RAM_DIR, SlowSyncVFS, ram_directory
from sqlite_gateway import Gateway

DELAY = 0.02  # seconds: far above a RAM fsync, so each sync's cost is the delay's


@pytest.fixture
def ram_dir() -> Iterator[str]:
    path = ram_directory("test-slow-sync-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shim() -> Iterator[SlowSyncVFS]:
    vfs = SlowSyncVFS(f"slow-sync-{uuid.uuid4().hex[:8]}", DELAY)
    try:
        yield vfs
    finally:
        vfs.unregister()


def test_the_ram_directory_is_on_tmpfs_where_there_is_one(ram_dir: str) -> None:
    assert os.path.isdir(ram_dir) and os.listdir(ram_dir) == []
    if os.path.isdir(RAM_DIR) and os.access(RAM_DIR, os.W_OK):
        assert os.path.dirname(ram_dir) == RAM_DIR


def test_every_commit_at_full_syncs_through_the_shim_and_waits_its_delay(
        ram_dir: str, shim: SlowSyncVFS) -> None:
    conn = apsw.Connection(os.path.join(ram_dir, "x.db"), vfs=shim.name)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t(x)")
        before, started = shim.syncs, time.monotonic()
        for i in range(5):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        elapsed = time.monotonic() - started
        syncs = shim.syncs - before
        assert syncs >= 5  # WAL + FULL: the WAL is synced at each commit
        assert elapsed >= syncs * DELAY  # a lower bound: sleep never returns early
        assert shim.slept >= shim.syncs * DELAY
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(5,)]
        conn.execute("PRAGMA synchronous=OFF")
        before = shim.syncs
        conn.execute("INSERT INTO t VALUES (5)")
        assert shim.syncs == before  # no sync asked, none made: only xSync is slowed
    finally:
        conn.close()


def test_a_gateway_opens_through_it_by_name_and_its_data_is_the_files(
        ram_dir: str, shim: SlowSyncVFS) -> None:
    path = os.path.join(ram_dir, "g.db")
    with Gateway(path, vfs=shim.name, synchronous="FULL", readers=0) as db:
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    assert shim.syncs >= 2
    plain = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)  # the default VFS
    try:
        assert plain.execute("SELECT count(*) FROM t").fetchall() == [(10,)]
    finally:
        plain.close()


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf"), "0.1", True])
def test_a_bad_delay_is_refused_before_anything_is_registered(bad: object) -> None:
    name = f"slow-sync-bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="delay must be a number of seconds >= 0"):
        SlowSyncVFS(name, bad)  # type: ignore[arg-type]
    assert name not in apsw.vfs_names()
