"""A short open-loop run of the demo app: the gateway and the busy backend at two
rates for a few seconds each, then the database checks.

The cell is ``benchmarks/load_sweep.py``'s :func:`run_cell`; the
app runs as a child process on a free loopback port. No pinning here (that would
pin the test process too), and no timing goal: the sweep script prints those.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import load_sweep

SECONDS = 3.0
RATES = (10.0, 40.0)  # requests/s: far below the capacity of either backend
COMMON = ("view", "page read", "bet", "bet async")  # kinds with a share large enough to appear


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["gateway", "busy"])
def test_open_loop_smoke(tmp_path: Path, backend: str) -> None:
    for rate in RATES:
        cell = load_sweep.run_cell(backend, None, rate, SECONDS, str(tmp_path / f"{rate:g}"),
                                   timeout=10.0)
        assert cell.error is None, cell.error
        assert cell.graceful, "the app did not stop on SIGTERM"
        assert cell.problems == [], cell.problems  # every database check passes
        # Open loop: every arrival of the schedule was sent, whatever the answers.
        assert cell.arrivals == int(rate * SECONDS) and cell.not_sent == 0
        assert sum(cell.failures.values()) + cell.ok == cell.arrivals + cell.failures["ticket"]
        assert len(cell.latencies) == cell.arrivals
        if backend == "gateway":
            assert not cell.failures, cell.failures
        else:  # the old way may lose a lock wait; nothing else may go wrong
            assert set(cell.failures) <= {"timeout", "500"}, cell.failures
    missing = [kind for kind in COMMON if not cell.by_kind[kind]]
    assert not missing, f"no {missing} in {dict(cell.by_kind)}"
