"""A gateway given up while its worker is stuck keeps its file open: no second SQLite."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

# In a child: importing sqlite3 here would change what later tests' same-file checks see.
CHILD = r"""
import sqlite3, sys, threading, warnings
from sqlite_gateway import Gateway, GatewayClosed, State
warnings.simplefilter("error")
path = sys.argv[1]
release = threading.Event()
db = Gateway(path, hang_timeout=0.3, busy_timeout=0.1, timeout=30).start()
db.execute("CREATE TABLE t(x)")
try:
    db.transaction(lambda conn: release.wait(60))  # Python that never returns in time
except GatewayClosed:
    pass
assert db.state is State.BROKEN, db.state
db.close()
del db  # its stuck thread keeps the connection, and so the file, open
with Gateway(path, readers=1, busy_timeout=0.1) as again:  # no SharedFileWarning: apsw holds them
    print(again.execute("SELECT count(*) FROM t").scalar())
release.set()
"""


def test_a_new_gateway_beside_a_stuck_one_is_not_taken_for_a_second_sqlite(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "app.db")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "0"
