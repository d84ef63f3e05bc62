"""A Locust smoke run of the demo app: 10 users for 10 s on the gateway, then the checks.

Locust runs as a child process (``import locust`` monkey-patches threading and
socket for the whole process, so this test never imports it); the app too. The
cell is ``benchmarks/load_compare.py``'s :func:`run_cell`, loaded by path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_benchmark

load_compare = load_benchmark("load_compare")

pytestmark = pytest.mark.skipif(
    not load_compare.locust_available(),
    reason="locust is not installed in this interpreter (pip install -e '.[load]')")

# Each user class's main requests (names as locustfile.py reports them).
MAIN_REQUESTS = {
    "PageViewer": ["/api/pages/[name]/view"],
    "Bettor": ["/api/accounts", "/api/bets", "/api/bets?async=1", "/api/tickets/[ticket]"],
    "Admin": ["/api/stats"],
}


@pytest.mark.timeout(150)
def test_locust_smoke_on_the_gateway(tmp_path: Path) -> None:
    backend = "gateway" if load_compare.backend_supported() else None
    # think x0.3: Admin (one user of ten) still makes enough requests in 10 s.
    cell = load_compare.run_cell(backend, users=10, seconds=10, workdir=str(tmp_path),
                                 think=0.3)
    assert cell.error is None, cell.error
    assert cell.graceful, "the app did not stop on SIGTERM"
    summary = cell.summary
    assert summary["failures"] == 0, summary["failures_by_name"]
    for user_class, names in MAIN_REQUESTS.items():
        missing = [n for n in names if not summary["per_name"].get(n)]
        assert not missing, f"{user_class}: no {missing} in {summary['per_name']}"
    assert cell.problems == []
