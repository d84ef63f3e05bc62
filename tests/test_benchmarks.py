"""Smoke runs of the benchmark scripts: they run, check themselves, and print a table."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_group_commit_benchmark_smoke_run():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "group_commit.py"), "--threads", "1,4",
         "--seconds", "0.3", "--markdown"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # the header row, then threads 1 and 4
    assert rows[1].startswith("| 1 |") and rows[2].startswith("| 4 |")
    assert all(row.rstrip().endswith("| ok |") for row in rows[1:])


def test_compare_benchmark_smoke_run():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--threads", "1,2",
         "--seconds", "0.3", "--no-chart", "--workload", "all",
         "--strategies", "busy,retry,gateway,gateway+readers,ceiling"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.strip()[:1].isdigit() and len(line.split()) > 5]
    assert len(rows) == 2 * 2 * 5  # workloads x thread counts x strategies
    assert all(row[-1] == "ok" for row in rows), proc.stdout


def test_priority_and_overload_benchmarks_smoke_run():
    for script, args in (("priority.py", ["--seconds", "0.5", "--web-threads", "4"]),
                         ("overload.py", ["--quick", "--factor", "3", "--rows", "50"])):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (script, proc.stdout, proc.stderr)
        assert "phase" in proc.stdout or "web alone" in proc.stdout, proc.stdout
    assert "missing from the database 0, refused yet stored 0" in proc.stdout
