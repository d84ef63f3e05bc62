"""The README runs as written: its quickstart, and its test command (which .ci/run runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import ROOT, run_python


def test_readme_quickstart_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S)
    assert block, "no quickstart block"
    code = f"import os; os.chdir({str(tmp_path)!r})\n" + block.group(1)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(('home', 800),) ('name', 'views')"
    assert lines[1] == "800"
    assert lines[2].startswith("refused: UNIQUE constraint failed")
    assert lines[3] == "[1, 1, 1]"
    assert lines[-1].startswith("after close: gateway is closed")


def test_ci_runs_the_readme_test_command():
    assert readme_test_command() in (ROOT / ".ci" / "run").read_text().splitlines()


# -- the test command: chromium is a best effort that never stops the tests ------------------

def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    return next(c for c in commands if c.endswith("-m pytest"))


def test_the_test_command_checks_types_and_lint_and_ends_with_pytest():
    steps = readme_test_command().split(" && ")
    # pytest is the last step, so its exit code is the command's: 5 (no tests) fails CI.
    assert steps[-3:] == [".venv/bin/mypy", ".venv/bin/ruff check .", ".venv/bin/python -m pytest"]
    assert "set -euo pipefail" in (ROOT / ".ci" / "run").read_text()


def chromium_step(tmp_path, *, uid: str, apt_get: int | None, chromium: bool = False):
    """Run the command's chromium step under .ci/run's shell options, with fake tools.

    Returns (exit code, output, the apt-get calls made). PATH holds only the fakes.
    """
    step = readme_test_command().split(" && python3 -m venv ")[0]
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


SKIPS = "chromium not installed: the browser test will skip"


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
    """CI runs as root on Debian, where the command installs chromium: the browser test
    must run there, not skip."""
    assert shutil.which("chromium") and shutil.which("chromedriver")
