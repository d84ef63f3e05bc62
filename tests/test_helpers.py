"""helpers/: rollup, settlement and maintenance jobs, and the PeriodicJob plugin on a bus."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from cherrypy.process.wspbus import Bus
from conftest import ROOT, WorkerBlocker, run_python

from helpers import maintenance, rollup, settlement
from helpers.periodic import PeriodicJob
from sqlite_gateway import Gateway

pytestmark = pytest.mark.timeout(60)
SCHEMA = ROOT / "webapp" / "schema.sql"
NOW = 1_700_000_000.0


@pytest.fixture
def db(db_path: str) -> Iterator[Gateway]:
    gateway = Gateway(db_path).start()
    try:
        gateway.execute(SCHEMA.read_text())
        yield gateway
    finally:
        gateway.close(timeout=30)


# -- rollup ---------------------------------------------------------------------------------

def test_rollup_aggregates_exactly_prunes_in_chunks_while_writes_go_on(db: Gateway) -> None:
    db.executemany("INSERT INTO pages(name, cap) VALUES (?, 1000000)", [("a",), ("b",), ("c",)])
    old = [("abc"[i % 3], NOW - 4000 - i * 37.0) for i in range(1200)]  # several hours back
    recent = [("a", NOW - 10.0)] * 5
    db.executemany("INSERT INTO page_views(page, at) VALUES (?, ?)", old + recent)
    expected = Counter((page, int(at // 3600)) for page, at in old)

    stop, written, errors = threading.Event(), [], []

    def web_writes() -> None:
        for i in range(10_000):  # bounded; ends on stop
            if stop.is_set():
                return
            try:
                db.execute("INSERT INTO page_views(page, at) VALUES ('b', ?)", (NOW + i,))
                written.append(i)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    writer = threading.Thread(target=web_writes, name="test-web-writes")
    writer.start()
    try:
        done = rollup.run(db, keep_seconds=3600.0, chunk=100, now=NOW)
    finally:
        stop.set()
        writer.join(30)
    assert not writer.is_alive() and not errors
    assert written, "the web writes never got a turn"
    assert done == {"rows": 1200, "chunks": 12}
    got = {(p, h): v for p, h, v in db.execute("SELECT page, hour, views FROM hourly_views").rows}
    assert got == dict(expected)
    assert db.execute("SELECT count(*) FROM page_views WHERE at < ?", (NOW - 3600,)).scalar() == 0
    assert db.execute("SELECT count(*) FROM page_views").scalar() == 5 + len(written)
    # A second run adds to the same hours (UPSERT) instead of failing or replacing.
    db.execute("INSERT INTO page_views(page, at) VALUES ('a', ?)", (old[0][1],))
    assert rollup.run(db, now=NOW) == {"rows": 1, "chunks": 1}
    key = ("a", int(old[0][1] // 3600))
    assert db.execute("SELECT views FROM hourly_views WHERE page=? AND hour=?",
                      key).scalar() == expected[key] + 1
    assert rollup.run(db, now=NOW) == {"rows": 0, "chunks": 0}


def test_rollup_refuses_a_bad_chunk(db: Gateway) -> None:
    with pytest.raises(ValueError):
        rollup.run(db, chunk=0)


# -- settlement -----------------------------------------------------------------------------

class MatchClosed(Exception):
    pass


def place_bet(conn: Any, account: int, match: int, pick: str, stake: int) -> int:
    """The web app's bet: refused unless the match is still open; debits the stake."""
    status = conn.execute("SELECT status FROM matches WHERE id = ?", (match,)).scalar()
    if status != "open":
        raise MatchClosed(f"match {match} is {status}")
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (stake, account))
    return conn.execute("INSERT INTO bets(account, match, pick, stake, placed_at) "
                        "VALUES (?, ?, ?, ?, ?)", (account, match, pick, stake, NOW)).lastrowid


CLOSE = ("UPDATE matches SET status='closed', winner=?, closed_at=? "
         "WHERE id=? AND status='open'")


def balances(db: Gateway) -> dict[str, int]:
    return dict(db.execute("SELECT name, balance FROM accounts").rows)


def test_settlement_pays_winners_exactly_once(db: Gateway) -> None:
    db.executemany("INSERT INTO accounts(id, name, balance) VALUES (?, ?, 100)",
                   [(1, "ann"), (2, "bob"), (3, "cy")])
    db.execute("INSERT INTO matches(id, name) VALUES (1, 'final'), (2, 'later')")
    db.transaction(place_bet, 1, 1, "red", 10)
    db.transaction(place_bet, 1, 1, "red", 5)
    db.transaction(place_bet, 2, 1, "blue", 20)
    db.transaction(place_bet, 3, 2, "red", 30)  # match 2 stays open
    db.execute(CLOSE, ("red", NOW, 1))

    assert settlement.run(db) == {"matches": 1, "bets": 3}
    assert balances(db) == {"ann": 100 - 15 + 30, "bob": 80, "cy": 70}
    assert db.execute("SELECT payout FROM bets WHERE match = 1 ORDER BY id").rows == (
        (20,), (10,), (0,))
    assert db.execute("SELECT payout FROM bets WHERE match = 2").scalar() is None
    assert dict(db.execute("SELECT id, status FROM matches").rows) == {1: "settled", 2: "open"}

    assert settlement.run(db) == {"matches": 0, "bets": 0}  # twice pays once
    assert db.transaction(settlement._settle, 1) is None
    assert balances(db) == {"ann": 115, "bob": 80, "cy": 70}


def test_bet_before_the_close_is_settled_and_one_after_is_refused(db: Gateway) -> None:
    db.executemany("INSERT INTO accounts(id, name, balance) VALUES (?, ?, 100)",
                   [(1, "ann"), (2, "bob")])
    db.execute("INSERT INTO matches(id, name) VALUES (1, 'final')")
    blocker = WorkerBlocker(db)  # queue all three in a known FIFO order
    try:
        before = db.submit_transaction(place_bet, 1, 1, "red", 40)
        close = db.submit(CLOSE, ("red", NOW, 1))
        after = db.submit_transaction(place_bet, 2, 1, "red", 40)
    finally:
        blocker.done()
    assert settlement.run(db) == {"matches": 1, "bets": 1}
    assert before.result(10) == 1
    assert close.result(10).rowcount == 1
    with pytest.raises(MatchClosed):
        after.result(10)
    assert balances(db) == {"ann": 100 - 40 + 80, "bob": 100}
    assert db.execute("SELECT count(*) FROM bets").scalar() == 1


# -- maintenance ----------------------------------------------------------------------------

def test_backup_restores_with_integrity_and_the_same_rows(db: Gateway, tmp_path: Path) -> None:
    db.executemany("INSERT INTO accounts(name, balance) VALUES (?, ?)",
                   [(f"user{i}", i) for i in range(500)])
    done = maintenance.run(db, backup_dir=tmp_path / "backups")
    assert done["optimized"] is True
    assert isinstance(done["checkpoint"], tuple) and len(done["checkpoint"]) == 2
    backup = Path(done["backup"])
    assert backup.is_file() and backup.name.startswith("backup-")
    assert not list(backup.parent.glob(".*"))  # no temp file left
    restored = maintenance.restore(backup, tmp_path / "restored.db")
    conn = apsw.Connection(restored, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute("SELECT id, name, balance FROM accounts ORDER BY id").fetchall()
    finally:
        conn.close()
    assert tuple(rows) == db.execute("SELECT id, name, balance FROM accounts ORDER BY id").rows
    with pytest.raises(FileExistsError):
        maintenance.restore(backup, restored)
    db.execute("INSERT INTO accounts(name, balance) VALUES ('after', 1)")  # still writable


def test_backup_retention_keeps_the_newest(db: Gateway, tmp_path: Path) -> None:
    made = [maintenance.run(db, backup_dir=tmp_path, keep=2, optimize=False)["backup"]
            for _ in range(4)]
    assert len(set(made)) == 4
    assert sorted(str(p) for p in tmp_path.glob("backup-*.db")) == sorted(made[-2:])


def test_a_backup_under_load_has_every_row_committed_before_it_and_never_stops_the_writer(
        db: Gateway, tmp_path: Path) -> None:
    stop = threading.Event()
    acked: list[int] = []

    def write() -> None:
        for n in range(1_000_000):  # bounded; stop ends it first
            if stop.is_set():
                return
            acked.append(db.execute("INSERT INTO accounts(name, balance) VALUES (?, 1)",
                                    (f"w{n}",)).lastrowid)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert wait_for(lambda: len(acked) >= 200)
        before = set(acked)
        backup, _ = maintenance.backup(db.path, tmp_path / "backups")
        during = len(acked)
        # The copy has its own read-only connection: it runs even while the
        # writer is held by someone else, and the writer is never asked for.
        blocker = WorkerBlocker(db)
        try:
            second, _ = maintenance.backup(db.path, tmp_path / "backups")
        finally:
            blocker.done()
        assert wait_for(lambda: len(acked) > during)  # writes went on
    finally:
        stop.set()
        writer.join(30)
    restored = maintenance.restore(tmp_path / "backups", tmp_path / "restored.db")  # newest
    conn = apsw.Connection(restored, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = {r[0] for r in conn.execute("SELECT id FROM accounts")}
    finally:
        conn.close()
    assert Path(second).name > Path(backup).name
    assert before <= rows <= set(acked)


def test_backup_and_restore_from_the_command_line(db: Gateway, tmp_path: Path) -> None:
    db.executemany("INSERT INTO accounts(name, balance) VALUES (?, 7)",
                   [(f"u{i}",) for i in range(50)])
    cli = "import sys; from helpers.maintenance import main; sys.exit(main(sys.argv[1:]))"
    made = []
    for _ in range(3):
        done = run_python(cli, "backup", db.path, "--dir", str(tmp_path / "b"), "--keep", "2")
        assert done.returncode == 0, done.stderr
        made.append(done.stdout.strip())
    assert [str(p) for p in maintenance.backups(tmp_path / "b")] == made[-2:]
    done = run_python(cli, "restore", str(tmp_path / "b"), "--to", str(tmp_path / "r.db"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "r.db")
    conn = apsw.Connection(str(tmp_path / "r.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchall() == [
            (50, 350)]
    finally:
        conn.close()
    again = run_python(cli, "restore", str(tmp_path / "b"), "--to", str(tmp_path / "r.db"))
    assert again.returncode == 1 and "will not overwrite" in again.stderr
    empty = run_python(cli, "restore", str(tmp_path), "--to", str(tmp_path / "x.db"))
    assert empty.returncode == 1 and "no backup in" in empty.stderr


def test_checkpoint_can_be_switched_off(db: Gateway) -> None:
    done = maintenance.run(db, checkpoint=False, optimize=False)
    assert done == {"optimized": False, "checkpoint": None, "backup": None, "removed": None}


# -- PeriodicJob on a bus -------------------------------------------------------------------

@pytest.fixture
def bus(db: Gateway) -> Iterator[tuple[Bus, list[tuple[int, str]]]]:
    test_bus = Bus()
    logged: list[tuple[int, str]] = []
    test_bus.subscribe("log", lambda msg, level: logged.append((level, msg)))
    test_bus.subscribe("sqlite-gateway", lambda: db)
    try:
        yield test_bus, logged
    finally:
        test_bus.exit()  # stop, and mark the bus exited for its atexit check


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded
        if predicate():
            return True
        time.sleep(0.01)
    return False


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_periodic_job_runs_repeatedly_survives_failures_and_stops_promptly(
        bus: tuple[Bus, list[tuple[int, str]]], db: Gateway) -> None:
    test_bus, logged = bus
    calls: list[Any] = []

    def job(gateway: Gateway, *, word: str) -> int:
        calls.append(gateway)
        if len(calls) == 2:
            raise ValueError("boom on the second run")
        return gateway.execute("SELECT length(?)", (word,)).scalar()

    plugin = PeriodicJob(test_bus, job, 0.05, name="counter", word="four")
    plugin.subscribe()
    assert not threads_named(plugin.thread_name)  # nothing starts before the bus does
    test_bus.start()
    assert threads_named(plugin.thread_name)
    assert not threads_named(plugin.thread_name)[0].daemon
    assert wait_for(lambda: len(calls) >= 4), calls
    assert all(g is db for g in calls)
    assert plugin.last_result == 4 and plugin.failures == 1
    errors = [msg for level, msg in logged if level == logging.ERROR]
    assert len(errors) == 1 and "ValueError: boom on the second run" in errors[0]

    plugin.interval = 3600.0  # stop must not wait for the interval
    started = time.monotonic()
    test_bus.stop()
    assert time.monotonic() - started < 5
    assert not threads_named(plugin.thread_name)


def test_periodic_job_start_stop_idempotent_graceful_and_config(
        bus: tuple[Bus, list[tuple[int, str]]], db: Gateway) -> None:
    test_bus, _ = bus
    seen: list[int] = []
    plugin = PeriodicJob(test_bus, lambda gateway, n: seen.append(n), 3600.0, name="idem", n=1)
    plugin.subscribe()
    test_bus.start()
    first = plugin._thread
    plugin.start()
    assert plugin._thread is first and len(threads_named(plugin.thread_name)) == 1
    plugin.n = 7  # what engine.<plugin>.n = 7 in config does
    plugin.run_now()
    assert seen == [7]
    test_bus.graceful()
    assert plugin._thread is not first and len(threads_named(plugin.thread_name)) == 1
    test_bus.stop()
    plugin.stop()
    assert not threads_named(plugin.thread_name)
    with pytest.raises(TypeError):
        PeriodicJob(test_bus, print, 1.0, interval=2)
    with pytest.raises(ValueError):
        PeriodicJob(test_bus, print, -1)


def test_periodic_job_without_a_gateway_logs_and_keeps_going() -> None:
    test_bus = Bus()
    logged: list[tuple[int, str]] = []
    test_bus.subscribe("log", lambda msg, level: logged.append((level, msg)))
    plugin = PeriodicJob(test_bus, lambda gateway: None, 0.01, name="nodb")
    with pytest.raises(RuntimeError):
        plugin.run_now()
    plugin.subscribe()
    test_bus.start()
    try:
        assert wait_for(lambda: sum(lvl == logging.ERROR for lvl, _ in logged) >= 2)
    finally:
        test_bus.exit()
    assert not threads_named(plugin.thread_name)


def test_job_plugins_run_their_jobs(bus: tuple[Bus, list[tuple[int, str]]], db: Gateway,
                                    tmp_path: Path) -> None:
    test_bus, _ = bus
    jobs = [rollup.RollupJob(test_bus, keep_seconds=0.0),
            settlement.SettlementJob(test_bus),
            maintenance.MaintenanceJob(test_bus, backup_dir=str(tmp_path), keep=1)]
    assert [j.interval for j in jobs] == [60.0, 1.0, 3600.0]
    assert jobs[0].run_now() == {"rows": 0, "chunks": 0}
    assert jobs[1].run_now() == {"matches": 0, "bets": 0}
    assert Path(jobs[2].run_now()["backup"]).is_file()
