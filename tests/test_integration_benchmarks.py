"""Smoke runs of the integration benchmarks: they run, check their files, print a table."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def _run(script: str, *args: str) -> list[list[str]]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [line.split() for line in proc.stdout.splitlines() if line.startswith("| ")][1:]


def test_asyncio_compare_smoke_run():
    rows = _run("asyncio_compare.py", "--tasks", "5", "--seconds", "0.3", "--markdown",
                "--strategies", "gateway,aiosqlite,aiosqlite-immediate")
    assert [row[1] for row in rows] == ["gateway", "aiosqlite", "aiosqlite-immediate"]
    assert all(row[-2] == "yes" for row in rows), rows  # the file holds every counted view


def test_multiprocess_smoke_run():
    rows = _run("multiprocess.py", "--processes", "1,2", "--threads", "4", "--seconds", "0.3",
                "--markdown")
    assert [row[1] for row in rows] == ["1", "2"]
    assert all(row[-2] == "yes" for row in rows), rows
