"""Django's own test suite, stock sqlite3 backend and the gateway backend, in one run.

The apps of ``tests/peer/run_django.py`` (the ORM, transactions, migrations, the
backend layer), whole: every test that passes on stock passes on the gateway,
except the ones listed there with their reason. Django's source distribution is
fetched from the package index (and cached) by the runner.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("tblib")  # the parallel runner's tracebacks of failing tests

RUNNER = Path(__file__).resolve().parent / "peer" / "run_django.py"


@pytest.mark.timeout(1800)
def test_djangos_own_tests_pass_on_the_gateway_as_on_stock() -> None:
    done = subprocess.run([sys.executable, str(RUNNER)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1700)
    print(done.stdout[-5000:])
    summary = done.stdout[done.stdout.rfind("Django's tests, apps:"):]
    assert done.returncode == 0, summary or done.stdout[-5000:]
    assert "stock    ran " in summary and "gateway  ran " in summary
