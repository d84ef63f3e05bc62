"""A process forked after start() inherits a gateway whose threads did not come with it:
the child's copy refuses every call at once and its exit does not wait.

Regression: before the fix, every call in the child waited out its whole timeout (forever with
``timeout=None``) for a worker that does not exist there, and the child's normal exit
waited 30 s in the exit hook. Now the child's copy refuses every call at once with
GatewayClosed, its exit does not wait, and a Gateway made in the child works.
Each case runs in a child interpreter that forks (a fork of the pytest process would
copy its threads' locks too).
"""

from __future__ import annotations

import json

import pytest
from conftest import run_python

_FORKER = """
import json, os, signal, sys, time
from sqlite_gateway import Gateway, GatewayClosed

path, readers, read_mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
db = Gateway(path, readers=readers, read_mode=read_mode, timeout=None).start()
db.execute("CREATE TABLE t(x)")
db.execute("INSERT INTO t VALUES ('parent')")
assert db.execute("SELECT count(*) FROM t").scalar() == 1  # this thread has a reader now
later = Gateway(path)  # made before the fork, started after it (gunicorn --preload)
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # the child
    signal.alarm(60)  # never outlive a failed test
    os.close(r)
    calls = {
        "execute": lambda: db.execute("INSERT INTO t VALUES ('child')"),
        "read": lambda: db.execute("SELECT count(*) FROM t"),
        "executemany": lambda: db.executemany("INSERT INTO t VALUES (?)", [("child",)]),
        "transaction": lambda: db.transaction(
            lambda conn: conn.execute("INSERT INTO t VALUES ('child')")),
        "submit": lambda: db.submit("INSERT INTO t VALUES ('child')").result(),
        "flush": lambda: db.flush(),
        "bulk": lambda: db.bulk("INSERT INTO t VALUES (?)", [("child",)]),
        "run_exclusive": lambda: db.run_exclusive(lambda conn: None),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = "ran"
        except GatewayClosed as exc:
            out[name] = str(exc)
    out["state"] = db.state.value
    with Gateway(path) as own:  # the child's own gateway works
        own.execute("INSERT INTO t VALUES ('child, own gateway')")
    with later:
        later.execute("INSERT INTO t VALUES ('child, started after the fork')")
    os.write(w, json.dumps(out).encode())
    os.close(w)
    # A normal exit (atexit runs): db was never closed here.
    raise SystemExit(0)
os.close(w)
with os.fdopen(r) as pipe:
    child = json.loads(pipe.read() or "{}")
ended = time.monotonic()
deadline = ended + 50
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.01)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    status = -1
exit_seconds = time.monotonic() - ended
db.execute("INSERT INTO t VALUES ('parent, after the fork')")  # the parent's gateway goes on
rows = sorted(r[0] for r in db.execute("SELECT x FROM t").rows)
check = db.execute("PRAGMA integrity_check").scalar()
db.close()
print(json.dumps({"child": child, "status": status, "exit_seconds": exit_seconds,
                  "rows": rows, "check": check}))
"""


@pytest.mark.parametrize("readers, read_mode", [(0, "inline"), (2, "inline"), (2, "threads")])
def test_a_forked_child_gets_gatewayclosed_at_once_and_exits_promptly(db_path, readers,
                                                                      read_mode):
    proc = run_python(_FORKER, db_path, str(readers), read_mode, timeout=90)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    child = report["child"]
    assert report["status"] == 0, (report, proc.stderr)
    for name in ("execute", "read", "executemany", "transaction", "submit", "flush", "bulk",
                 "run_exclusive"):
        assert "forked child" in child[name] and "after the fork" in child[name], (name, child)
    assert child["state"] == "closed"
    # The exit hook did not wait for the parent's worker (30 s before the fix).
    assert report["exit_seconds"] < 15, report
    assert report["rows"] == ["child, own gateway", "child, started after the fork", "parent",
                              "parent, after the fork"]
    assert report["check"] == "ok"


_MULTIPROCESSING = """
import json, multiprocessing, sys
from sqlite_gateway import Gateway, GatewayClosed

def work(db, path, answers):
    try:
        db.execute("INSERT INTO t VALUES ('child')")
        answers.put("ran")
    except GatewayClosed as exc:
        answers.put(str(exc))
    with Gateway(path) as own:
        own.execute("INSERT INTO t VALUES ('child, own gateway')")

if __name__ == "__main__":
    path = sys.argv[1]
    db = Gateway(path, timeout=None).start()
    db.execute("CREATE TABLE t(x)")
    ctx = multiprocessing.get_context("fork")
    answers = ctx.SimpleQueue()
    proc = ctx.Process(target=work, args=(db, path, answers))
    proc.start()
    proc.join(50)
    alive = proc.is_alive()
    if alive:
        proc.kill()
        proc.join()
    answer = answers.get() if not answers.empty() else None
    rows = [r[0] for r in db.execute("SELECT x FROM t").rows]
    db.close()
    print(json.dumps({"answer": answer, "alive": alive, "exitcode": proc.exitcode,
                      "rows": rows}))
"""


def test_a_multiprocessing_fork_child_is_refused_at_once(db_path):
    proc = run_python(_MULTIPROCESSING, db_path, timeout=90)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert not report["alive"] and report["exitcode"] == 0, report
    assert "forked child" in report["answer"], report
    assert report["rows"] == ["child, own gateway"]
