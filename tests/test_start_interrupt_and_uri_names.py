"""Ctrl-C during start() returns at once, and URI file names are refused clearly.

Regression: Ctrl-C during ``start()`` while another process held the file's lock hung until the
busy timeout ran out: start() joined a worker waiting in SQLite's busy handler.
``Gateway("file:x.db?mode=ro")`` created a file with that literal name.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import child_python, wait_until

from sqlite_gateway import Gateway, GatewayClosed

# Holds an exclusive lock on a rollback-journal file until its stdin closes.
_HOLDER = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("CREATE TABLE IF NOT EXISTS t(x)")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""

_STARTER = """
import signal, subprocess, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
from sqlite_gateway import Gateway, GatewayError
holder = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "locked"
db = Gateway(sys.argv[1], busy_timeout=120, hang_timeout=None)
try:
    print("starting", flush=True)
    db.start()
    print("started", flush=True)
except KeyboardInterrupt:
    print("interrupted", db.state.value, flush=True)
try:
    db.execute("SELECT 1")
except GatewayError as exc:
    print("then", type(exc).__name__, flush=True)
db.close()  # a no-op on a gateway that never started
print("exiting", flush=True)
"""


def test_ctrl_c_during_start_on_a_locked_file_returns_at_once_and_the_process_exits(tmp_path):
    """The worker waits up to busy_timeout (120 s here) for the lock; Ctrl-C must not."""
    path = str(tmp_path / "locked.db")
    with child_python(_STARTER, path, _HOLDER, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "starting"
        # start() is under way once it has made the worker thread (which then waits for
        # the lock): the child's second thread.
        wait_until(lambda: len(os.listdir(f"/proc/{child.pid}/task")) >= 2,
                   "start() to make the worker thread")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)  # hang detector: about 1 s seen
    assert child.returncode == 0, err
    assert out.split("\n")[:3] == ["interrupted closed", "then GatewayClosed", "exiting"], (
        out, err)


@pytest.mark.parametrize("path", ["file:app.db?mode=ro", "file:app.db", "FILE:app.db?cache=shared",
                                  "file:///tmp/app.db"])
def test_a_uri_file_name_is_refused_with_a_clear_error(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="URI"):
        Gateway(path)
    assert list(tmp_path.iterdir()) == []  # no file with the literal name


def test_a_plain_path_that_merely_contains_a_colon_or_question_mark_still_works(tmp_path):
    with Gateway(str(tmp_path / "a:b?c.db")) as db:
        db.execute("CREATE TABLE t(x)")
    with Gateway(tmp_path / "a:b?c.db") as db:
        assert db.execute("SELECT count(*) FROM t").scalar() == 0
    with pytest.raises(GatewayClosed):
        db.execute("SELECT 1")
