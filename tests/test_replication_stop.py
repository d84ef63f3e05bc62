"""``sqlite-gateway replicate`` stops litestream however it is stopped, and fails loudly.

SIGTERM (systemd, docker, ``timeout``) once ended the command and left litestream
running as an orphan; an unwritable ``--to`` never failed, it logged an error
every second. Each test runs the command as a child process, finds litestream's
pid in its log, and watches that process from outside.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from conftest import ROOT
from sqlite_gateway.replication import ReplicationError, find_litestream

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def litestream() -> str:
    try:
        return find_litestream()
    except ReplicationError as exc:
        pytest.skip(f"the litestream binary cannot be found, so nothing can be replicated: {exc}")


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("CREATE TABLE t(x)")
    finally:
        conn.close()
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


@pytest.fixture
def replicate(app_db: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The command running for app.db, and litestream's pid (read from its log)."""
    command = [sys.executable, "-m", "sqlite_gateway", "replicate", str(app_db),
               "--to", str(tmp_path / "replica"), "--sync-interval", "0.2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pid = None
    with subprocess.Popen(command, env=env, text=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as child:
        assert child.stderr is not None
        try:
            seen = ""
            deadline = time.monotonic() + 30
            while pid is None and time.monotonic() < deadline:  # bounded
                ready, _, _ = select.select([child.stderr], [], [], 0.5)
                if ready:
                    line = child.stderr.readline()
                    assert line, f"the command ended before litestream started: {seen}"
                    seen += line
                    found = re.search(r"litestream started \(pid (\d+)\)", line)
                    pid = int(found.group(1)) if found else None
            assert pid is not None, f"litestream never started: {seen}"
            yield child, pid
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(30)
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)  # the orphan the test found, if it did


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_litestream_too(
        litestream: str, replicate: tuple[subprocess.Popen[str], int],
        sig: signal.Signals) -> None:
    child, pid = replicate
    assert alive(pid)
    child.send_signal(sig)
    assert child.wait(60) == 0  # a clean stop, as after Ctrl-C
    assert ends_within(pid, 30), f"litestream (pid {pid}) outlived the command"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is "
                    "Linux's (prctl)")
def test_litestream_ends_when_the_command_is_killed_outright(
        litestream: str, replicate: tuple[subprocess.Popen[str], int]) -> None:
    """Here litestream also dies on its next log line to the closed pipe; the parent-death
    signal makes that prompt and certain (a quiet litestream writes no line)."""
    child, pid = replicate
    child.kill()
    child.wait(30)
    assert ends_within(pid, 30), f"litestream (pid {pid}) outlived a SIGKILLed parent"


def test_an_unwritable_replica_folder_fails_at_once_with_the_reason(
        litestream: str, app_db: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    to = tmp_path / "a-file" / "replica"  # cannot be created, even by root
    done = subprocess.run([sys.executable, "-m", "sqlite_gateway", "replicate", str(app_db),
                           "--to", str(to)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          text=True, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert f"error: cannot write the replica folder {to}: Not a directory" in done.stderr
    assert "litestream started" not in done.stderr
