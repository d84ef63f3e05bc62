"""The package as a user installs it: the wheel's contents, its metadata, the console script.

The wheel is built once (about 6 s) from a copy of the checkout, offline: no build
isolation, with the setuptools the test extra installs.
"""

from __future__ import annotations

import email.message
import email.parser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import sqlite_gateway
from conftest import ROOT

VERSION = sqlite_gateway.__version__
SCRIPT = Path(sysconfig.get_path("scripts")) / "sqlite-gateway"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    # A copy, so that the build's own folders (build/, *.egg-info) never touch the checkout
    # and no stale file from an earlier build can slip into the wheel.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("sqlite_gateway", "webapp", "helpers"):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    text = wheel.read(f"sqlite_gateway-{VERSION}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


def test_the_wheel_ships_sqlite_gateway_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    # webapp/ and helpers/ are generic names that would clash with a user's own modules.
    assert tops == {"sqlite_gateway", f"sqlite_gateway-{VERSION}.dist-info"}
    assert "sqlite_gateway/py.typed" in names
    assert "sqlite_gateway/backup.py" in names and "sqlite_gateway/cli.py" in names
    assert "sqlite_gateway/replication/__main__.py" in names
    dist = f"sqlite_gateway-{VERSION}.dist-info"
    assert wheel.read(f"{dist}/top_level.txt").decode().split() == ["sqlite_gateway"]
    assert wheel.read(f"{dist}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    entry_points = wheel.read(f"{dist}/entry_points.txt").decode()
    assert "sqlite-gateway = sqlite_gateway.cli:main" in entry_points


def test_the_metadata_declares_license_python_and_extras(wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    assert meta["Name"] == "sqlite-gateway" and meta["Version"] == VERSION
    assert meta["License-Expression"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Operating System :: POSIX" in classifiers
    requires = meta.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == ["apsw>=3.45.0.0"]
    extras = set(meta.get_all("Provides-Extra"))
    assert {"web", "flask", "metrics", "load", "replication", "bench", "test"} <= extras


def test_the_test_extra_is_built_from_the_other_extras(wheel: zipfile.ZipFile) -> None:
    by_extra: dict[str, list[str]] = {}
    for req in metadata(wheel).get_all("Requires-Dist"):
        found = re.fullmatch(r'(.*); extra == "(.*)"', req)
        if found:
            by_extra.setdefault(found.group(2), []).append(found.group(1))
    test = by_extra.pop("test")
    self_refs = [r for r in test if r.startswith("sqlite-gateway[")]
    assert len(self_refs) == 1
    named = set(self_refs[0][len("sqlite-gateway["):-1].split(","))
    assert named == set(by_extra)  # bench too: the suite runs each benchmark script's smoke form
    repeated = {r for extra in by_extra.values() for r in extra} & set(test)
    assert not repeated


def test_webapp_and_helpers_are_not_importable_outside_the_checkout(tmp_path: Path) -> None:
    """What the installed package offers a program run elsewhere (no checkout on sys.path)."""
    code = ("import importlib.util, sqlite_gateway\n"
            "print([importlib.util.find_spec(n) is None for n in ('webapp', 'helpers')])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[True,", "True]"]


def test_python_dash_m_webapp_runs_from_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "webapp", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m webapp")


def test_the_console_script_is_installed_and_backs_up_and_restores(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"no {SCRIPT}: install the package (pip install -e '.[test]')"
    version = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"sqlite-gateway {VERSION}"
    db = tmp_path / "app.db"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)").fetchall()
    conn.close()
    made = subprocess.run([str(SCRIPT), "backup", str(db), "--dir", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert Path(made.stdout.strip()).parent == tmp_path / "b"
    back = subprocess.run([str(SCRIPT), "restore", str(tmp_path / "b"), "--to",
                           str(tmp_path / "r.db")], capture_output=True, text=True, timeout=60)
    assert back.returncode == 0, back.stderr
    conn = apsw.Connection(str(tmp_path / "r.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT sum(x) FROM t").fetchall() == [(3,)]
    finally:
        conn.close()


def test_the_console_script_runs_the_replication_commands(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"no {SCRIPT}: install the package (pip install -e '.[test]')"
    db = tmp_path / "app.db"
    done = subprocess.run([str(SCRIPT), "replica-config", str(db), "--to",
                           str(tmp_path / "replica")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(db) in done.stdout and str(tmp_path / "replica") in done.stdout
    missing = subprocess.run([str(SCRIPT), "restore-replica", "--from",
                              str(tmp_path / "nothing"), "--to", str(tmp_path / "r.db")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "error: litestream restore from" in missing.stderr
    assert not (tmp_path / "r.db").exists()
