"""Smoke runs of the integration benchmarks: they run, check their files, print a table."""

from __future__ import annotations

from conftest import run_benchmark


def _run(script: str, *args: str) -> list[list[str]]:
    proc = run_benchmark(script, *args, "--no-wait-quiet")  # a smoke run: no figure to keep
    assert proc.returncode == 0, proc.stderr
    return [line.split() for line in proc.stdout.splitlines() if line.startswith("| ")][1:]


def test_asyncio_compare_smoke_run():
    rows = _run("asyncio_compare", "--tasks", "5", "--seconds", "0.3", "--markdown",
                "--strategies", "gateway,aiosqlite,aiosqlite-immediate")
    assert [row[1] for row in rows] == ["gateway", "aiosqlite", "aiosqlite-immediate"]
    assert all(row[-2] == "yes" for row in rows), rows  # the file holds every counted view


def test_multiprocess_smoke_run():
    rows = _run("multiprocess", "--processes", "1,2", "--threads", "4", "--seconds", "0.3",
                "--repeat", "1", "--markdown")
    # Every row without and with the process lock; the file holds every counted view.
    assert [(row[1], row[3]) for row in rows] == [("off", "1"), ("off", "2"), ("on", "1"),
                                                  ("on", "2")]
    assert all("yes" in row for row in rows), rows
