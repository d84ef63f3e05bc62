"""``.ci/run`` on every supported Python the machine has, and a run that fails on any step.

README says Python 3.10-3.13 are supported; ``.ci/run`` runs the whole suite on the
main Python and the core tests on each other one it finds, says which it ran and
which it did not find, and fails if any step failed. Its functions are tested here
one by one: the script is sourced in a bash child with fake tools on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

CI = ROOT / ".ci" / "run"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is needed to run .ci/run")


def in_script(code: str, *, path: Path | None = None, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in bash after sourcing .ci/run (which then only defines its functions)."""
    environment = {"PATH": f"{path}:/usr/bin:/bin" if path else "/usr/bin:/bin",
                   "HOME": "/nonexistent", **(env or {})}
    assert BASH is not None
    return subprocess.run([BASH, "-c", f"source {CI}\n{code}"], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def fake(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return tool


def test_a_working_python_on_path_is_found(tmp_path: Path) -> None:
    tool = fake(tmp_path / "bin", "python3.12", "exit 0")
    done = in_script("find_python 3.12", path=tmp_path / "bin")
    assert (done.returncode, done.stdout.strip()) == (0, str(tool))


def test_a_broken_shim_falls_back_to_pyenvs_newest_install(tmp_path: Path) -> None:
    """A pyenv shim for a version pyenv does not select exits with an error: skip it."""
    fake(tmp_path / "bin", "python3.10", "echo 'pyenv: python3.10: command not found' >&2; "
                                         "exit 127")
    root = tmp_path / "pyenv"
    fake(root / "versions" / "3.10.2" / "bin", "python3.10", "exit 0")
    newest = fake(root / "versions" / "3.10.13" / "bin", "python3.10", "exit 0")
    fake(root / "versions" / "3.1.0" / "bin", "python3.10", "exit 0")  # not a 3.10.*
    done = in_script("find_python 3.10", path=tmp_path / "bin",
                     env={"PYENV_ROOT": str(root)})
    assert (done.returncode, done.stdout.strip()) == (0, str(newest))


def test_a_python_that_is_not_there_is_not_found(tmp_path: Path) -> None:
    done = in_script("find_python 3.99 || echo NOT FOUND", path=tmp_path)
    assert done.stdout.strip() == "NOT FOUND"


def test_the_real_pythons_found_here_are_the_versions_asked_for() -> None:
    for version in ("3.10", "3.12", "3.13"):
        done = in_script(f"find_python {version} || true",
                         env={"PATH": f"{Path.home()}/.pyenv/shims:/usr/bin:/bin",
                              "HOME": str(Path.home())})
        if done.stdout.strip():
            asked = subprocess.run(
                [done.stdout.strip(), "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True, text=True, timeout=60)
            assert asked.stdout.strip() == str(tuple(map(int, version.split("."))))


# main() with every step replaced: what it runs, what it says, and its exit code.
STEPS = """
install_chromium() { echo CHROMIUM; }
make_venv() { echo "VENV $1 $2 $3"; }
check_types() { echo MYPY; %(mypy)s; }
check_lint() { echo RUFF; }
full_suite() { echo FULL SUITE; }
core_suite() { echo "CORE $2"; }
find_python() { [ "$1" = 3.12 ] && echo /fake/python3.12; }
main
"""


def run_main(mypy: str = "true", pythons: str = "3.10 3.12") -> subprocess.CompletedProcess[str]:
    return in_script(STEPS % {"mypy": mypy},
                     env={"CI_PYTHONS": pythons, "CI_MAIN_PYTHON": sys.executable})


def test_every_step_runs_and_the_pythons_run_and_missing_are_named() -> None:
    done = run_main()
    assert done.returncode == 0, done.stdout + done.stderr
    order = [line for line in done.stdout.splitlines() if not line.startswith("===")]
    assert order[:5] == ["CHROMIUM", f"VENV {sys.executable} .venv test", "MYPY", "RUFF",
                         "FULL SUITE"]
    assert "CORE 3.12" in order
    main = ".".join(map(str, sys.version_info[:3]))
    assert f"Pythons run: {main} (full suite)" in done.stdout
    assert "Pythons not found: 3.10" in done.stdout
    assert "every step passed" in done.stdout


def test_a_failing_step_fails_the_run_but_the_others_still_run() -> None:
    done = run_main(mypy="false")
    assert done.returncode == 1
    assert "FULL SUITE" in done.stdout and "CORE 3.12" in done.stdout  # ran after it
    assert "FAILED: mypy" in done.stdout and "every step passed" not in done.stdout


def test_sourcing_the_script_runs_nothing_and_leaves_the_directory(tmp_path: Path) -> None:
    done = in_script("pwd; echo SOURCED")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(ROOT), "SOURCED"]
