"""Acknowledged means committed: kill -9 loses nothing; outside locks are waited for."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import apsw
from conftest import child_python, read_only

CHILD = r"""
import os, sys, threading
from sqlite_gateway import Gateway

path, log_path = sys.argv[1], sys.argv[2]
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
db = Gateway(path).start()
db.execute("CREATE TABLE IF NOT EXISTS acked(id INTEGER PRIMARY KEY, kind TEXT)")
db.execute("CREATE TABLE IF NOT EXISTS pairs(id INTEGER, half INTEGER)")

def record(i):
    os.write(log, b"%d\n" % i)  # only after the call returned

def pair(conn, i):
    conn.execute("INSERT INTO pairs VALUES (?, 1)", (i,))
    conn.execute("INSERT INTO acked VALUES (?, 'tx')", (i,))
    conn.execute("INSERT INTO pairs VALUES (?, 2)", (i,))

def work(k):
    for n in range(1_000_000):  # bounded; the parent kills us long before
        i = k * 1_000_000 + n
        if n % 3 == 0:
            db.execute("INSERT INTO acked VALUES (?, 'execute')", (i,))
            record(i)
        elif n % 3 == 1:
            db.transaction(pair, i)
            record(i)
        else:
            fut = db.submit("INSERT INTO acked VALUES (?, 'submit')", (i,))
            db.flush()
            fut.result()
            record(i)

threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
for t in threads:
    t.start()
print("running", flush=True)
for t in threads:
    t.join()
"""


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    db_path, log_path = str(tmp_path / "app.db"), str(tmp_path / "acked.log")
    with child_python(CHILD, db_path, log_path, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE) as child:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.exists(log_path) and os.path.getsize(log_path) > 20_000:
                break  # a few thousand acknowledged writes
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    with open(log_path) as f:
        lines = f.read().split("\n")
    acked = {int(x) for x in lines[:-1]}  # the last line may be torn by the kill
    assert len(acked) > 1000
    conn = read_only(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        present = {r[0] for r in conn.execute("SELECT id FROM acked")}
        assert acked - present == set(), "acknowledged writes were lost"
        halves = conn.execute(
            "SELECT count(*) FROM (SELECT id FROM pairs GROUP BY id HAVING count(*) != 2)"
        ).fetchall()[0][0]
        assert halves == 0, "a partial transaction is visible"
    finally:
        conn.close()


# Holds the write lock from outside until told to commit (a line on stdin).
HOLDER = r"""
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO items(name) VALUES ('outside')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


def _release(holder):
    holder.stdin.write("commit\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"


def test_an_outside_process_holding_the_write_lock_briefly_causes_no_error(gateway, db_path):
    with child_python(HOLDER, db_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as holder:
        assert holder.stdout.readline().strip() == "locked"
        errors, results = [], []
        calling = threading.Barrier(9)

        def write(k):
            calling.wait(30)
            try:
                results.append(gateway.execute("INSERT INTO items(name) VALUES (?)", (str(k),)))
            except BaseException as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        calling.wait(30)  # every writer is making its call while the lock is held
        _release(holder)
        for t in threads:
            t.join(30)
        assert holder.wait(30) == 0
    assert errors == []
    assert len(results) == 8
    assert gateway.execute("SELECT count(*) FROM items").scalar() == 9


def test_a_lock_held_past_the_busy_timeout_fails_the_batch_and_the_gateway_recovers(db_path):
    from sqlite_gateway import Gateway

    with Gateway(db_path, busy_timeout=0.1) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        with child_python(HOLDER, db_path, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as holder:
            assert holder.stdout.readline().strip() == "locked"
            try:
                db.execute("INSERT INTO items(name) VALUES ('blocked')")
                raised = None
            except apsw.BusyError as exc:
                raised = exc
            assert isinstance(raised, apsw.BusyError)
            _release(holder)
            assert holder.wait(30) == 0
        assert db.execute("INSERT INTO items(name) VALUES ('after')").rowcount == 1
        assert db.execute("SELECT count(*) FROM items").scalar() == 2
