"""Smoke runs of the benchmark scripts (they run, check themselves, print a table),
and the floors they measure against: correct, or their figures mean nothing."""

from __future__ import annotations

import threading

import apsw
import pytest
from conftest import run_benchmark as run_script

from benchmarks import floors, goals, workloads


def test_group_commit_benchmark_smoke_run():
    proc = run_script("group_commit", "--threads", "1,4", "--seconds", "0.3", "--markdown",
                      "--no-wait-quiet")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # the header row, then threads 1 and 4
    assert rows[1].startswith("| 1 |") and rows[2].startswith("| 4 |")
    assert all(row.rstrip().endswith("| ok |") for row in rows[1:])


def test_compare_benchmark_smoke_run():
    proc = run_script("compare", "--threads", "2", "--seconds", "0.2", "--no-chart",
                      "--workload", "all",
                      "--strategies", "busy,direct,naive,bare,gateway,gateway+readers,ceiling",
                      "--no-wait-quiet")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.strip()[:1].isdigit() and len(line.split()) > 5]
    # Each workload runs the strategies that can run it: writes 6 (not direct),
    # mixed 3 (busy and the two gateways), point-read 4 (no write floors, no ceiling).
    assert len(rows) == 6 + 6 + 3 + 4, proc.stdout
    assert all(row[-1] == "ok" for row in rows), proc.stdout
    for title in ("pageview-fn:", "pageview-trigger:", "mixed:", "point-read:"):
        assert title in proc.stdout
    assert "load average per cell: " in proc.stdout and "quiet wait: off" in proc.stdout


def test_worker_rows_benchmark_prints_the_writer_cost_against_its_floor():
    proc = run_script("worker_rows", "--rows", "300", "--rounds", "1",
                      "--mode", "fn,post,submit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for what in ("fn=pageview", "post", "submit"):
        assert f"{what}: writer CPU per request, gateway " in proc.stdout
    assert proc.stdout.count("gateway / floor = ") == 3


def test_writebehind_benchmark_smoke_run():
    proc = run_script("writebehind", "--rows", "2000", "--chunk", "500", "--rounds", "1",
                      "--backpressure-rows", "300", "--synchronous", "OFF", "--no-wait-quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submit / bare+future = " in proc.stdout
    assert "bare loop, a Future per row" in proc.stdout
    assert "load average per cell: " in proc.stdout and "quiet wait: off" in proc.stdout


def test_priority_and_overload_benchmarks_smoke_run():
    for script, args in (("priority", ["--seconds", "0.5", "--web-threads", "4"]),
                         ("overload", ["--quick", "--factor", "3", "--rows", "50"])):
        proc = run_script(script, *args, "--no-wait-quiet")
        assert proc.returncode == 0, (script, proc.stdout, proc.stderr)
        assert "phase" in proc.stdout or "web alone" in proc.stdout, proc.stdout
        assert "load average per cell: " in proc.stdout, proc.stdout
        assert "quiet wait: off" in proc.stdout, proc.stdout
    assert "missing from the database 0, refused yet stored 0" in proc.stdout


@pytest.mark.parametrize("design", ["BareLoop", "NaiveQueue"])
def test_floor_answers_after_commit_and_fails_only_the_failing_fn(tmp_path, design):
    path = str(tmp_path / "floor.db")
    workloads.create_schema(path)
    conn = apsw.Connection(path)
    loop = getattr(floors, design)(conn).start()
    outside = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    seen = []

    def view_then_look(c, page):
        workloads.pageview(c, page, 1.0)
        return page

    def fails(c):
        workloads.pageview(c, "p1", 2.0)
        raise ValueError("no")

    try:
        answers = []
        threads = [threading.Thread(target=lambda p=p: answers.append(loop.call(view_then_look, p)))
                   for p in ("p0", "p2", "p3")]
        for t in threads:
            t.start()
        with pytest.raises(ValueError, match="no"):
            loop.call(fails)
        for t in threads:
            t.join(30)
        # Once answered, another connection sees the rows: the answer came after COMMIT.
        seen = outside.execute("SELECT name, views FROM pages WHERE views > 0 "
                               "ORDER BY name").fetchall()
        assert sorted(answers) == ["p0", "p2", "p3"]
        assert seen == [("p0", 1), ("p2", 1), ("p3", 1)]  # nothing of the failed fn
    finally:
        loop.stop()
        outside.close()
        conn.close()
    assert workloads.check_database(path, 3)["correct"]


@pytest.mark.parametrize("futures", [False, True])
def test_write_behind_floor_keeps_every_row_and_reports_a_failed_one(tmp_path, futures):
    path = str(tmp_path / "wb.db")
    workloads.create_schema(path)
    conn = apsw.Connection(path)
    loop = floors.WriteBehindLoop(conn, futures=futures, batch_max=7).start()
    try:
        answers = [loop.submit(workloads.INSERT_VIEW, ("p1", float(i))) for i in range(50)]
        bad = loop.submit(workloads.INSERT_VIEW, (None, 0.0))  # NOT NULL
        loop.flush()
        assert loop.committed == 51 and loop.failed == 1
        if futures:
            assert all(f.done() and f.exception() is None for f in answers)
            assert isinstance(bad.exception(0), apsw.ConstraintError)
        else:
            assert bad is None
    finally:
        loop.stop()
        conn.close()
    check = apsw.Connection(path)
    try:
        assert check.execute("SELECT count(*) FROM views").fetchall() == [(50,)]
    finally:
        check.close()


def test_goal_lines_judge_the_ratio_from_the_cells():
    def cell(ops, p99=1.0, starved=0):
        return {"ops_per_s": ops, "p99_ms": p99, "starved": starved, "errors": 0,
                "correct": True}

    index = goals.GOAL_PLAN.index(next(g for g in goals.GOAL_PLAN if g[0] == "point-read"))
    threads = goals.GOAL_PLAN[index][2]
    met = goals.goal_lines(index, {("gateway+readers", threads): cell(900),
                                   ("direct", threads): cell(1000)}, threads)
    missed = goals.goal_lines(index, {("gateway+readers", threads): cell(899, starved=2),
                                      ("direct", threads): cell(1000)}, threads)
    assert [v for v, _ in met] == ["PASS", "PASS"]
    assert [v for v, _ in missed] == ["MISS", "MISS"]
    assert "0.90x" in met[0][1] and "starved threads = 2" in missed[1][1]


def test_handoff_and_asyncio_benchmarks_smoke_run_with_the_load_per_path():
    proc = run_script("handoff", "--calls", "200", "--no-wait-quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "us/call" not in line
            and "->" in line]
    assert len(rows) == 6, proc.stdout  # six paths, each with its load before -> after
    proc = run_script("asyncio_compare", "--tasks", "4", "--seconds", "0.3",
                      "--strategies", "gateway,aiosqlite", "--no-wait-quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load average per cell: " in proc.stdout and "quiet wait: off" in proc.stdout


def test_profiling_scripts_smoke_run():
    proc = run_script("profile_hot", "--threads", "2", "--seconds", "0.2",
                      "--synchronous", "OFF")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].split()[-1] == "ok", proc.stdout
    proc = run_script("steps", "--n", "200", "--n-commit", "20", "--synchronous", "OFF")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in ("Request object", "commit share", "bare loop call"):
        assert step in proc.stdout, proc.stdout


def test_every_benchmark_module_imports():
    """A name moved between benchmark modules breaks its importers only when they run: import
    every module (in a child: some import web frameworks and ORMs) so that a stale import
    fails here."""
    import subprocess
    import sys

    from conftest import ROOT
    names = sorted(".".join(("benchmarks", *p.relative_to(ROOT / "benchmarks").with_suffix("")
                                            .parts)).removesuffix(".__init__")
                   for p in (ROOT / "benchmarks").rglob("*.py"))
    assert "benchmarks.vfs.fault" in names and "benchmarks.quiet" in names
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_benchmarks_are_a_package_that_imports_no_test_and_edits_no_sys_path():
    """Scripts run as ``python -m benchmarks.<name>`` and import each other as a package;
    tests may import benchmarks, never the other way round (the VFS shims live in
    benchmarks/vfs/ for that reason)."""
    import ast

    from conftest import ROOT
    assert (ROOT / "benchmarks" / "__init__.py").is_file()
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in ("tests", "conftest", "faultvfs", "powervfs"), (
                    f"{path.name} imports {name}")
            if isinstance(node, ast.Attribute) and node.attr == "path":
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), (
                    f"{path.name}:{node.lineno} uses sys.path")


def test_snapshot_reads_benchmark_smoke_run():
    proc = run_script("snapshot_reads", "--reads", "3", "--threads", "2", "--seconds", "0.2",
                      "--repeat", "1", "--no-wait-quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line[:1].isdigit()]
    assert [row[2] for row in rows] == ["direct", "singles", "snapshot"], proc.stdout
    assert all(row[-1] == "ok" for row in rows), proc.stdout
