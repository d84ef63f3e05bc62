"""bulk()'s note on an error says what is in the file: a slice that timed out may
still commit, one that failed kept nothing, one refused at once never ran.

Regression: after a slice timed out, the note said "0 of N parameter sets were committed; the rest
did not run", yet the slice had started and committed afterwards.
"""

from __future__ import annotations

import re
import threading

import apsw
import pytest
from conftest import scalar

from sqlite_gateway import Gateway, GatewayClosed, RequestTimeout

HELD = 40  # the parameter set whose slice is held up on the worker


def _known_committed(exc: BaseException) -> tuple[int, int, str]:
    note = " ".join(getattr(exc, "__notes__", []))
    match = re.search(r"bulk\(\): (\d+) of (\d+) parameter sets", note)
    assert match, note
    return int(match[1]), int(match[2]), note


def test_a_slice_that_timed_out_may_still_commit_and_the_note_says_so(db_path):
    release = threading.Event()

    def gate(x: int) -> int:  # runs on the worker, inside a slice
        if x == HELD:
            release.wait(20)
        return x

    with Gateway(db_path, background_slice=1e-6) as db:
        db.execute("CREATE TABLE t(x INTEGER)")
        db.run_exclusive(lambda conn: conn.create_scalar_function("gate", gate, 1))
        rows = [(i,) for i in range(100)]
        try:
            with pytest.raises(RequestTimeout) as caught:
                db.bulk("INSERT INTO t VALUES (gate(?))", rows, timeout=0.5)
            known, total, note = _known_committed(caught.value)
            assert total == 100
            # While the held slice waits, the file holds exactly what the note calls known.
            assert scalar(db_path, "SELECT count(*) FROM t") == known
            assert 0 < known <= HELD
        finally:
            release.set()
        db.flush()
        in_file = scalar(db_path, "SELECT count(*) FROM t")
        assert in_file > known  # the held slice committed after its caller stopped waiting
        assert "may still commit" in note, note
        assert f"starts at parameter set {known}" in note, note
        # Only that slice: bulk() sent nothing after it.
        assert scalar(db_path, "SELECT max(x) FROM t") == in_file - 1 < total - 1


def test_a_slice_that_failed_kept_nothing_and_the_note_says_so(db_path):
    with Gateway(db_path, background_slice=1e-6) as db:
        db.execute("CREATE TABLE t(x INTEGER CHECK (x != 40))")
        with pytest.raises(apsw.ConstraintError) as caught:
            db.bulk("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        known, _, note = _known_committed(caught.value)
        assert scalar(db_path, "SELECT count(*) FROM t") == known
        assert "rolled back" in note and "may still commit" not in note, note


def test_a_slice_refused_at_once_did_not_run(db_path):
    db = Gateway(db_path).start()
    db.execute("CREATE TABLE t(x INTEGER)")
    db.close()
    with pytest.raises(GatewayClosed) as caught:
        db.bulk("INSERT INTO t VALUES (?)", [(1,)])
    known, _, note = _known_committed(caught.value)
    assert known == 0 and "was not accepted" in note, note
