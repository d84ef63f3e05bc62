"""The benchmarks' quiet wait and load records (benchmarks/quiet.py): a cell starts once the
1-minute load average is under the threshold, or after the bounded wait; every cell carries
its load before and after; a run says whether it was quiet. The load source, the clock and
the sleep are injected, so no test waits for real."""

from __future__ import annotations

import argparse

import pytest
from conftest import run_benchmark

from benchmarks import perf_goals, quiet


class FakeMachine:
    """A scripted load average over a fake clock: each sleep advances the clock."""

    def __init__(self, loads: list[float]) -> None:
        self.loads = loads
        self.said: list[str] = []
        self.now = 100.0
        self.sleeps: list[float] = []
        self.looks = 0

    def load(self) -> float:
        self.looks += 1
        return self.loads[min(len(self.loads) - 1, len(self.sleeps))]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def waiter(self, below: float = 0.9, max_wait: float = 90.0, **kw: object) -> quiet.QuietWait:
        return quiet.QuietWait(below, max_wait, load=self.load, sleep=self.sleep,
                               clock=self.clock, poll=1.0, say=self.said.append,
                               **kw)  # type: ignore[arg-type]


def test_a_cell_on_a_quiet_machine_starts_at_once():
    machine = FakeMachine([0.3])
    waiter = machine.waiter()
    assert waiter.wait() == 0.0
    assert machine.sleeps == [] and waiter.waits == [0.0] and waiter.gave_up == 0
    assert machine.said == []  # nothing to say when nothing waits


def test_a_cell_waits_until_the_load_falls_under_the_threshold():
    machine = FakeMachine([1.6, 1.2, 0.95, 0.9, 0.89, 0.2])
    waiter = machine.waiter(below=0.9)
    assert waiter.wait() == 4.0  # four polls of 1 s: 0.9 is not under 0.9, 0.89 is
    assert machine.sleeps == [1.0] * 4
    assert waiter.gave_up == 0
    assert machine.said == ["waiting for the 1-minute load average (1.60) to fall under 0.9 "
                            "(at most 90 s)"]  # once per wait, not per poll
    assert "4 s in all over 1 cells, longest 4 s" in waiter.line()


def test_the_wait_gives_up_after_its_bound_and_the_cell_runs_anyway():
    machine = FakeMachine([3.0])
    waiter = machine.waiter(max_wait=2.5)
    assert waiter.wait() == 2.5  # the last poll is cut to what is left of the bound
    assert machine.sleeps == [1.0, 1.0, 0.5]
    assert waiter.wait() == 2.5
    assert waiter.gave_up == 2 and waiter.waits == [2.5, 2.5]
    assert "2 started before the load fell" in waiter.line()


def test_the_wait_is_bounded_even_when_the_clock_does_not_move():
    machine = FakeMachine([3.0])
    waiter = quiet.QuietWait(0.9, 5.0, load=machine.load, sleep=lambda s: None,
                             clock=lambda: 0.0, poll=1.0, say=machine.said.append)
    assert waiter.wait() == 0.0  # the frozen clock says no time passed
    assert machine.looks == 6  # at most max_wait / poll + 1 looks, never forever
    assert waiter.gave_up == 1


def test_a_disabled_wait_never_looks_at_the_load():
    machine = FakeMachine([5.0])
    waiter = machine.waiter(enabled=False)
    assert waiter.wait() == 0.0
    assert machine.looks == 0 and machine.sleeps == []
    assert "off (--no-wait-quiet)" in waiter.line()


@pytest.mark.parametrize("bad", [{"below": 0.0}, {"max_wait": -1.0},
                                 {"max_wait": float("inf")}, {"poll": 0.0}])
def test_bad_wait_settings_are_refused_with_what_to_change(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        quiet.QuietWait(**bad)


def test_a_cell_records_the_load_before_and_after_and_the_time_it_waited(monkeypatch):
    machine = FakeMachine([1.4, 0.5])
    readings = iter([1.2, 1.7])  # before and after the cell
    monkeypatch.setattr(quiet, "load_average", lambda: next(readings))
    waiter = machine.waiter()
    with quiet.cell_load(waiter) as load:
        assert load == {}  # filled in as the cell ends
    assert load == {"load_before": 1.2, "load_after": 1.7, "busy": True, "waited_s": 1.0}
    assert quiet.load_text(load) == "1.20->1.70 BUSY (waited 1 s)"
    readings = iter([0.4, 0.6])
    with quiet.cell_load() as unwaited:
        pass
    assert unwaited == {"load_before": 0.4, "load_after": 0.6, "busy": False}
    assert quiet.load_text(unwaited) == "0.40->0.60"


def test_the_run_line_says_quiet_only_when_every_cell_started_under_one():
    calm = quiet.load_fields(0.5, 1.3)
    busy = quiet.load_fields(1.0, 0.8)
    assert "run QUIET" in quiet.quiet_line([calm, calm])
    line = quiet.quiet_line([calm, busy])
    assert "run BUSY (1 of 2 cells started at load >= 1.0)" in line
    assert line.startswith("load average per cell: 0.50 to 1.30")
    assert quiet.quiet_line([{}]) == "load: not recorded"


def test_the_options_make_the_wait_and_pass_on_to_a_child_benchmark():
    parser = argparse.ArgumentParser()
    quiet.add_quiet_options(parser)
    default = parser.parse_args([])
    waiter = quiet.quiet_wait(default)
    assert (waiter.enabled, waiter.below, waiter.max_wait) == (True, 0.9, 90.0)
    tuned = parser.parse_args(["--quiet-below", "0.7", "--quiet-max-wait", "30"])
    assert quiet.quiet_args(tuned) == ["--quiet-below", "0.7", "--quiet-max-wait", "30"]
    assert parser.parse_args(quiet.quiet_args(tuned)) == tuned
    off = parser.parse_args(["--no-wait-quiet"])
    assert not quiet.quiet_wait(off).enabled and quiet.quiet_args(off) == ["--no-wait-quiet"]
    for bad in (["--quiet-below", "0"], ["--quiet-max-wait", "-1"],
                ["--quiet-max-wait", "inf"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_perf_goals_runs_every_goal_benchmark_with_the_same_quiet_options(monkeypatch, capsys):
    ran = []

    def fake_step(name, command, markdown, extra):
        ran.append((command[0], extra))
        return 0, "load average per cell: 0.1 to 0.2; run QUIET\nquiet wait: off\nPASS  x\n", 1.0

    monkeypatch.setattr(perf_goals, "run_step", fake_step)
    assert perf_goals.main(["--quiet-max-wait", "5", "--fsync"]) == 0
    modules = [module for module, _ in ran]
    assert modules == ["benchmarks.compare", "benchmarks.multiprocess", "benchmarks.writebehind",
                       "benchmarks.fsync_sweep"]
    assert all(extra == ["--quiet-below", "0.9", "--quiet-max-wait", "5"] for _, extra in ran)
    out = capsys.readouterr().out
    assert "goals: 4 PASS, 0 MISS; machine quiet" in out
    assert out.count("run QUIET; quiet wait: off") == 4  # each benchmark's two lines, summed up
    ran.clear()
    perf_goals.main(["--no-wait-quiet"])
    assert all(extra == ["--no-wait-quiet"] for _, extra in ran)


def test_group_commit_waits_before_each_cell_and_prints_the_load_per_cell():
    # A threshold no machine reaches: every cell is quiet at once, so nothing waits here,
    # yet the wait was asked for (and counted) before each of the four cells.
    proc = run_benchmark("group_commit", "--threads", "1,2", "--seconds", "0.2",
                         "--quiet-below", "1000")
    assert proc.returncode == 0, proc.stderr
    assert "quiet wait: each cell waited for load < 1000 (at most 90 s): 0 s in all " \
           "over 4 cells" in proc.stdout, proc.stdout
    assert "load average per cell: " in proc.stdout
    assert proc.stderr.count(" load ") == 4, proc.stderr


def test_a_median_of_runs_is_busy_when_any_run_was_and_keeps_every_wait():
    calm = {**quiet.load_fields(0.5, 0.7, 3.0), "ops_per_s": 10}
    busy = {**quiet.load_fields(1.2, 0.9, 90.0), "ops_per_s": 20}
    merged = quiet.load_of_runs([calm, busy, calm])
    assert merged == {"busy": True, "load_before": 1.2, "load_after": 0.9, "waited_s": 96.0}
    assert quiet.load_of_runs([calm])["busy"] is False
    assert quiet.load_of_runs([{"child_failed": "x"}]) == {}
    assert quiet.load_part({**busy, "child_failed": "x"}) == quiet.load_fields(1.2, 0.9, 90.0)
