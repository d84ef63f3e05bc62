"""A gateway warns at start when something else in its process has its file open.

The stdlib ``sqlite3`` on the same file in the same process gave "database disk
image is malformed" in 3 of 4 runs (two copies of SQLite do not see each other's
locks); a second running Gateway on one file splits group commit and contends
for the write lock. Both are now detected at ``start()``: the first is a
``SharedFileWarning``, the second a WARNING log line. The stdlib ``sqlite3``
cases run in a child process: this one must never open a file with two copies
of SQLite.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from conftest import run_python
from sqlite_gateway import Gateway, State

# In a child: open app.db with <opener>, then start a gateway; print the warnings it gave.
CHILD = """
import json, sys, warnings
from sqlite_gateway import Gateway
path, opener = sys.argv[1], sys.argv[2]
if opener == "sqlite3":
    import sqlite3
    other = sqlite3.connect(path)
    other.execute("SELECT count(*) FROM sqlite_master").fetchall()
elif opener == "apsw":
    import apsw
    other = apsw.Connection(path)
    other.execute("SELECT count(*) FROM sqlite_master").fetchall()
elif opener == "sqlite3-other-file":
    import sqlite3
    other = sqlite3.connect(path + ".other")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    db = Gateway(path).start()
    db.close()
print(json.dumps([[w.category.__name__, str(w.message)] for w in seen]))
print("sqlite3 loaded:", "_sqlite3" in sys.modules, file=sys.stderr)
"""


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with Gateway(path) as db:
        db.execute("CREATE TABLE t(x)")
    return path


def child_warnings(path: Path, opener: str) -> list[list[str]]:
    done = run_python(CHILD, str(path), opener)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_stdlib_sqlite3_connection_on_the_file_is_reported(app_db: Path) -> None:
    seen = child_warnings(app_db, "sqlite3")
    assert len(seen) == 1 and seen[0][0] == "SharedFileWarning"
    assert str(app_db) in seen[0][1] and "stdlib sqlite3" in seen[0][1]
    assert "malformed" in seen[0][1]


@pytest.mark.parametrize("opener", ["nothing", "apsw", "sqlite3-other-file"])
def test_no_warning_without_a_second_sqlite_on_the_same_file(app_db: Path, opener: str) -> None:
    """The controls: apsw shares the gateway's SQLite (its locks are seen), and sqlite3 on
    another file is no concern."""
    assert child_warnings(app_db, opener) == []


def test_a_second_running_gateway_on_the_file_is_logged(
        app_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Slower than one shared gateway, not unsafe (one SQLite): a log line, not a warning."""
    with Gateway(app_db) as first:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with caplog.at_level(logging.WARNING, logger="sqlite_gateway.samefile"):
                with Gateway(app_db) as second:
                    assert second.execute("SELECT count(*) FROM t").scalar() == 0
    said = [r.getMessage() for r in caplog.records if r.name == "sqlite_gateway.samefile"]
    assert len(said) == 1 and "another Gateway in this process" in said[0]
    assert str(app_db) in said[0] and first.state is State.CLOSED


def test_a_new_gateway_after_the_old_one_closed_is_not_reported(
        app_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    Gateway(app_db).start().close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING, logger="sqlite_gateway.samefile"):
            with Gateway(app_db) as again:  # the restart recipe: a new Gateway on the file
                assert again.state is State.RUNNING
    assert not [r for r in caplog.records if r.name == "sqlite_gateway.samefile"]


# As an error (this suite's filterwarnings = error), the warning stops start() before it
# opens anything; the standard filter silences it.
AS_ERROR = """
import sqlite3, sys, warnings
from sqlite_gateway import Gateway, State
from sqlite_gateway.samefile import SharedFileWarning
other = sqlite3.connect(sys.argv[1])
other.execute("SELECT 1").fetchall()
warnings.simplefilter("error")
db = Gateway(sys.argv[1])
try:
    db.start()
except SharedFileWarning:
    print("refused", db.state is State.NEW)
db.close()
warnings.filterwarnings("ignore", category=SharedFileWarning)  # the opt-out
with Gateway(sys.argv[1]) as silenced:
    print("silenced", silenced.state is State.RUNNING)
"""


def test_as_an_error_the_warning_leaves_the_gateway_unstarted_and_it_can_be_silenced(
        app_db: Path) -> None:
    done = run_python(AS_ERROR, str(app_db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["refused True", "silenced True"]


def test_a_missing_file_is_not_looked_for(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Gateway(tmp_path / "new.db") as db:
            assert db.state is State.RUNNING
