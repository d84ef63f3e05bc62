"""A smoke run of the ORM page-view benchmark: every cell runs in its child, its file
checks out, and the goal lines are printed (their verdicts are figures, not asserted)."""

from __future__ import annotations

import re

import pytest
from conftest import run_benchmark

pytest.importorskip("sqlalchemy")
pytest.importorskip("peewee")

WAYS = ["stock", "gateway", "gateway-fn", "stock-read", "gateway-read"]


@pytest.mark.timeout(600)
def test_orm_pageview_smoke_run_checks_every_cell_and_prints_goal_lines():
    proc = run_benchmark("orm_pageview", "--smoke", "--markdown", "--no-wait-quiet",
                         timeout=480)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    # every ORM x way x thread count has a row, and every file held one log row
    # per write answered and counters that sum to them
    seen = {(row[0], row[1], row[2]) for row in rows}
    assert seen == {(orm, way, n) for orm in ("sqlalchemy", "peewee") for way in WAYS
                    for n in ("1", "4")}, rows
    assert all(row[-1] == "ok" for row in rows), rows
    write_rows = [row for row in rows if not row[1].endswith("read")]
    assert all(int(row[3].replace(",", "")) > 0 for row in write_rows), write_rows
    goals = re.findall(r"^- (PASS|MISS|info)  (\w+) x4: (.*)$", proc.stdout, re.MULTILINE)
    for orm in ("sqlalchemy", "peewee"):
        texts = [text for _, name, text in goals if name == orm]
        assert any(text.startswith("(c) gateway-fn / (a) stock") for text in texts), texts
        assert any(text.startswith("(b) gateway / (a) stock") for text in texts), texts
        assert any(text.startswith("ORM point reads gateway / stock") for text in texts), texts
        for way in ("gateway", "gateway-fn"):  # the gateway's ways never see a lock error
            assert any(text.startswith(f"{way}: 0 'database is locked'") and "check ok" in text
                       for text in texts), texts
    assert re.search(r"^goals: (all met|\d+ missed)$", proc.stdout, re.MULTILINE)
