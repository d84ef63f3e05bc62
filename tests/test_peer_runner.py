"""The SQLAlchemy suite runner's comparison (the suite itself runs in CI, not here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "peer"))

import run_sqlalchemy  # noqa: E402

JUNIT = """<testsuites><testsuite>
<testcase classname="test_suite.JoinTest_sqlite+{driver}_3_{v}" name="test_a"/>
<testcase classname="test_suite.JoinTest_sqlite+{driver}_3_{v}" name="test_b">{b}</testcase>
<testcase classname="test_suite.Other" name="test_c"><skipped/></testcase>
</testsuite></testsuites>"""


def test_one_test_has_one_id_on_every_driver(tmp_path):
    stock, gateway = tmp_path / "stock.xml", tmp_path / "gateway.xml"
    stock.write_text(JUNIT.format(driver="pysqlite", v="40_1", b=""))
    gateway.write_text(JUNIT.format(driver="gateway", v="54_1", b="<failure/>"))
    assert run_sqlalchemy.outcomes_of(stock) == {
        "test_suite.JoinTest::test_a": "passed", "test_suite.JoinTest::test_b": "passed",
        "test_suite.Other::test_c": "skipped"}
    outcomes = run_sqlalchemy.outcomes_of(gateway)
    assert outcomes["test_suite.JoinTest::test_b"] == "failed"
    assert run_sqlalchemy.counts(outcomes) == "1 passed, 1 failed, 1 skipped"


def test_every_expected_failure_names_its_reason():
    assert run_sqlalchemy.EXPECTED
    assert all(len(reason) > 40 for reason in run_sqlalchemy.EXPECTED.values())
