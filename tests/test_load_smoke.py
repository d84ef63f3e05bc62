"""The demo's Locust load profile (locustfile.py) against the live app: 10 users for
10 s, no failure, every user class's main requests made, the database checks pass.

Locust runs as a child process (``import locust`` monkey-patches threading and
socket for the whole process, so this test never imports it); the app too, through
``benchmarks.demo_app``. No figure is read here: the HTTP figures come from
``benchmarks.load_sweep``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from benchmarks.demo_app import check_db, free_port, start_app, stop_app
from benchmarks.harness import child_env


def _locust_available() -> bool:
    """Whether ``import locust`` works in a child (never in this process)."""
    try:
        return subprocess.run([sys.executable, "-c", "import locust"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(
    not _locust_available(),
    reason="locust is not installed in this interpreter (pip install -e '.[load]')")

USERS, SECONDS = 10, 10
# Each user class's main requests (names as locustfile.py reports them).
MAIN_REQUESTS = {
    "PageViewer": ["/api/pages/[name]/view"],
    "Bettor": ["/api/accounts", "/api/bets", "/api/bets?async=1", "/api/tickets/[ticket]"],
    "Admin": ["/api/stats"],
}


@pytest.mark.timeout(150)
def test_the_locust_profile_runs_against_the_app_without_failures(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(16)
    db_path = str(tmp_path / "app.db")
    port = free_port()
    app = start_app(db_path, port, "gateway", str(tmp_path), token)
    try:
        # think x0.3: Admin (one user of ten) still makes enough requests in 10 s.
        locust = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless",
             "-u", str(USERS), "-r", "5", "-t", f"{SECONDS}s",
             "--host", f"http://127.0.0.1:{port}", "--json-file", str(tmp_path / "locust"),
             "--exit-code-on-error", "0", "--only-summary", "--loglevel", "WARNING"],
            cwd=ROOT, env=child_env(SQLITE_GATEWAY_ADMIN_TOKEN=token, LOAD_THINK="0.3"),
            capture_output=True, text=True, timeout=SECONDS + 60)
    finally:
        graceful = stop_app(app)
    assert locust.returncode == 0, locust.stderr[-2000:]
    assert graceful, "the app did not stop on SIGTERM"
    entries = json.loads((tmp_path / "locust.json").read_text())
    failures = {e["name"]: e["num_failures"] for e in entries if e["num_failures"]}
    assert failures == {}, failures
    per_name: dict[str, int] = {}
    for e in entries:
        per_name[e["name"]] = per_name.get(e["name"], 0) + e["num_requests"]
    for user_class, names in MAIN_REQUESTS.items():
        missing = [n for n in names if not per_name.get(n)]
        assert not missing, f"{user_class}: no {missing} in {per_name}"
    assert check_db(db_path) == []
