"""SQLAlchemy's own dialect compliance suite on stock ``sqlite+pysqlite`` and on
``sqlite+gateway``, in one run, compared test by test.

    .venv/bin/python tests/peer/run_sqlalchemy.py [--keep DIR] [--cache DIR]

The suite (``sqlalchemy.testing.suite``) ships in SQLAlchemy's wheel; the
requirements class SQLAlchemy runs it with on SQLite (``DefaultRequirements``,
in ``test/requirements.py``) is only in its source distribution, which is
fetched with pip for the installed version and cached (``--cache``, default
``~/.cache/sqlite-gateway``). Nothing of SQLAlchemy is kept in this repository.

Each run gets its own directory (a ``setup.cfg`` with the pytest, requirements
and database sections, a ``conftest.py`` loading SQLAlchemy's pytest plugin, a
test file importing the whole suite) and a file database. Prints both counts
and every test that passes on stock but not on the gateway; exits 1 if any of
those is not in :data:`EXPECTED` (each with its reason), 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

# Tests that pass on stock sqlite3 and are known not to pass on the gateway, with why.
# (Test ids are junit "classname::name" as pytest writes them.)
EXPECTED: dict[str, str] = {}

SETUP_CFG = """\
[tool:pytest]
addopts = --tb native -r fE -p no:cacheprovider --maxfail=2000
python_files = test_*.py
filterwarnings =
    error::DeprecationWarning:sqlalchemy

[sqla_testing]
requirement_cls = sqla_requirements:DefaultRequirements
profile_file = profiles.txt

[db]
default = {url}
"""

CONFTEST = """\
import pytest

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403
"""

# The gateway run: SQLAlchemy's SQLite provisioning ATTACHes "test_schema" with
# SQL on every new connection and deletes the files when an engine is disposed.
# The gateway refuses ATTACH (an attachment would stay on its shared
# connections), so here the gateway's connection set-up option attaches it
# on every connection, with the gateway's guard lifted for that one statement
# (test provisioning only), and dispose closes the process's gateway before
# deleting the files.
CONFTEST_GATEWAY = CONFTEST + """
import os
import re

from sqlalchemy import event
from sqlalchemy.dialects.sqlite import provision as _sqlite_provision
from sqlalchemy.testing.provision import post_configure_engine

from sqlite_gateway.integrations import registry

_stock = _sqlite_provision._sqlite_post_configure_engine


@post_configure_engine.for_db("sqlite")
def _gateway_post_configure_engine(url, engine, follower_ident):
    if engine.driver != "gateway":
        return _stock(url, engine, follower_ident)
    prefix = f"{follower_ident}_" if follower_ident else ""
    attach_path = os.path.abspath(f"{prefix}{engine.driver}_test_schema.db")

    def attach(conn):
        guard, conn.authorizer = conn.authorizer, None
        try:
            conn.execute(f'ATTACH DATABASE "{attach_path}" AS test_schema')
        finally:
            conn.authorizer = guard

    @event.listens_for(engine, "do_connect")
    def add_setup(dialect, conn_rec, cargs, cparams):
        cparams["setup"] = attach

    @event.listens_for(engine, "engine_disposed")
    def dispose(engine):
        filename = engine.url.database
        if filename:
            registry.close(filename)
        for path in (attach_path, filename):
            for suffix in ("", "-wal", "-shm", "-journal"):
                if path and os.path.exists(path + suffix):
                    os.remove(path + suffix)
"""

TEST_FILE = "from sqlalchemy.testing.suite import *  # noqa: F401,F403\n"


def requirements_source(cache: Path) -> Path:
    """SQLAlchemy's ``test/requirements.py`` for the installed version (cached)."""
    import sqlalchemy

    version = sqlalchemy.__version__
    cached = cache / f"sqlalchemy-{version}-requirements.py"
    if cached.exists():
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # No build isolation: pip prepares the metadata with this environment's
        # setuptools in seconds, instead of installing a build environment (minutes).
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"sqlalchemy=={version}",
                        "--no-binary", ":all:", "--no-deps", "--no-build-isolation", "-d", tmp],
                       check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = tar.getmember(f"{sdist.name[:-len('.tar.gz')]}/test/requirements.py")
            source = tar.extractfile(member)
            assert source is not None
            partial = cached.with_suffix(".part")
            partial.write_bytes(source.read())
            partial.replace(cached)
    return cached


def run_suite(workdir: Path, url: str, conftest: str, requirements: Path,
              timeout: float) -> dict[str, str]:
    """Run the whole suite against ``url`` in ``workdir``; test id -> outcome."""
    workdir.mkdir(parents=True)
    (workdir / "setup.cfg").write_text(SETUP_CFG.format(url=url))
    (workdir / "conftest.py").write_text(conftest)
    (workdir / "test_suite.py").write_text(TEST_FILE)
    shutil.copy(requirements, workdir / "sqla_requirements.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    junit = workdir / "junit.xml"
    with open(workdir / "output.txt", "w") as out:
        subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={junit}",
                        "test_suite.py"], cwd=workdir, env=env, stdout=out,
                       stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if not junit.exists():
        raise SystemExit(f"the suite did not run against {url}: see {workdir / 'output.txt'}")
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        # The class name carries the driver and SQLite's version: drop them.
        classname = re.sub(r"_sqlite\+\w+_[\d_]+$", "", case.get("classname") or "")
        test_id = f"{classname}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            outcomes[test_id] = "failed"
        elif "skipped" in kinds:
            outcomes[test_id] = "skipped"
        else:
            outcomes[test_id] = "passed"
    return outcomes


def counts(outcomes: dict[str, str]) -> str:
    values = list(outcomes.values())
    return ", ".join(f"{values.count(k)} {k}" for k in ("passed", "failed", "skipped"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="run in this new directory and keep it")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "sqlite-gateway")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds each run may take")
    args = parser.parse_args()
    requirements = requirements_source(args.cache)
    base = args.keep or Path(tempfile.mkdtemp(prefix="sqla-suite-"))
    try:
        stock = run_suite(base / "stock", "sqlite+pysqlite:///querytest.db", CONFTEST,
                          requirements, args.timeout)
        gateway = run_suite(base / "gateway", "sqlite+gateway:///querytest.db",
                            CONFTEST_GATEWAY, requirements, args.timeout)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    lost = sorted(t for t, o in stock.items() if o == "passed" and gateway.get(t) != "passed")
    unexpected = [t for t in lost if t not in EXPECTED]
    print(f"stock sqlite+pysqlite: {counts(stock)}")
    print(f"sqlite+gateway: {counts(gateway)}")
    for test_id in lost:
        reason = EXPECTED.get(test_id, "UNEXPECTED")
        print(f"  passes on stock, {gateway.get(test_id, 'missing')} on gateway: "
              f"{test_id} ({reason})")
    gained = [t for t, o in gateway.items() if o == "passed" and stock.get(t) != "passed"]
    if gained:
        print(f"  {len(gained)} pass on the gateway only")
    if unexpected:
        print(f"FAILED: {len(unexpected)} test(s) pass on stock but not on the gateway")
        return 1
    print(f"OK: every test that passes on stock passes on the gateway "
          f"(except {len(lost)} expected)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
