"""``.ci/run``, the test command README gives: it checks types and lint, ends with pytest,
and its chromium step is a best effort that never stops the tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT

CI = ROOT / ".ci" / "run"
SKIPS = "chromium not installed: the browser test will skip"


def test_the_ci_script_checks_types_and_lint_and_fails_on_any_step():
    text = CI.read_text()
    assert "set -euo pipefail" in text
    for step in (".venv/bin/mypy", ".venv/bin/ruff check .", "-m pytest"):
        assert step in text, step


def chromium_step(tmp_path, *, uid: str, apt_get: int | None, chromium: bool = False):
    """Run the script's chromium step under its shell options, with fake tools.

    Returns (exit code, output, the apt-get calls made). PATH holds only the fakes.
    """
    line = next(line for line in CI.read_text().splitlines() if SKIPS in line)
    step = line.split(" && python3 -m venv ")[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-get.calls"
    fakes = {"id": f'[ "$1" = -u ] && echo {uid}'}
    if apt_get is not None:
        fakes["apt-get"] = f'echo "$@" >> {calls}; exit {apt_get}'
    if chromium:
        fakes["chromium"] = fakes["chromedriver"] = "exit 0"
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!{shutil.which('sh')}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    done = subprocess.run([shutil.which("bash"), "-c",
                           f"set -euo pipefail\n{step} && echo TESTS RUN"],
                          env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    made = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, done.stdout + done.stderr, made


def test_chromium_is_installed_as_root_with_apt_get(tmp_path):
    code, out, calls = chromium_step(tmp_path, uid="0", apt_get=0)
    assert (code, calls) == (0, ["update -qq", "install -y -qq chromium chromium-driver"])
    assert "TESTS RUN" in out and SKIPS not in out


def test_a_failing_apt_get_does_not_stop_the_tests(tmp_path):
    code, out, calls = chromium_step(tmp_path, uid="0", apt_get=100)
    assert (code, calls) == (0, ["update -qq"])
    assert SKIPS in out and "TESTS RUN" in out


def test_a_user_who_is_not_root_gets_the_tests_without_apt_get(tmp_path):
    code, out, calls = chromium_step(tmp_path, uid="1000", apt_get=0)
    assert (code, calls) == (0, [])
    assert SKIPS in out and "TESTS RUN" in out


def test_a_system_without_apt_get_gets_the_tests(tmp_path):
    code, out, calls = chromium_step(tmp_path, uid="0", apt_get=None)
    assert (code, calls) == (0, [])
    assert SKIPS in out and "TESTS RUN" in out


def test_chromium_already_there_is_not_installed_again(tmp_path):
    code, out, calls = chromium_step(tmp_path, uid="0", apt_get=0, chromium=True)
    assert (code, calls) == (0, [])
    assert "TESTS RUN" in out and SKIPS not in out


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI only: elsewhere chromium may be missing")
def test_ci_has_chromium_so_the_browser_test_runs():
    """CI runs as root on Debian, where the script installs chromium: the browser test
    must run there, not skip."""
    assert shutil.which("chromium") and shutil.which("chromedriver")
