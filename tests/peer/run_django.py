"""Django's own test suite on stock ``django.db.backends.sqlite3`` and on the gateway backend.

Run from the checkout::

    .venv/bin/python tests/peer/run_django.py               # the full set of apps, both backends
    .venv/bin/python tests/peer/run_django.py --apps basic transactions --backends gateway

It fetches the source distribution of the installed Django version from the package
index (``pip download django==X --no-binary :all: --no-deps``, cached in ``--cache``,
default ``~/.cache/sqlite-gateway``; nothing of it is kept in the repository), unpacks
it in a temporary directory, and runs its
``tests/runtests.py`` once per backend, one after the other, on file databases, with
the settings modules beside this script. It prints each backend's counts and every
test that passes on stock but not on the gateway; the exit status is 0 when each of
those is listed in ``KNOWN`` (with the reason), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the settings modules are beside this script
ROOT = HERE.parent.parent

APPS = ("basic", "transactions", "queries", "model_fields", "aggregation", "expressions",
        "db_functions", "update", "delete", "get_or_create", "bulk_create", "select_related",
        "migrations", "backends")
"""The apps the full run covers: the ORM, transactions, migrations and the backend layer."""

SETTINGS = {"stock": "django_settings_stock", "gateway": "django_settings_gateway"}

_BEGIN = ("an atomic() block begins with BEGIN IMMEDIATE (it holds the writer from its start, "
          "so what it reads cannot change before it writes); the test asserts the SQL text "
          "BEGIN")
KNOWN: dict[str, str] = {
    "backends.base.test_base.DatabaseWrapperLoggingTests.test_commit_debug_log": _BEGIN,
    "backends.sqlite.tests.TestTransactionMode.test_default_transaction_mode": _BEGIN,
    "backends.sqlite.tests.TestTransactionMode.test_valid_transaction_modes": (
        "transaction_mode 'DEFERRED' is refused at start-up: on the gateway a block always "
        "holds the writer from its start"),
    # Beyond APPS (the wider run in docs/django.md):
    **dict.fromkeys((
        "schema.tests.SchemaTests.test_add_datefield_and_datetimefield_use_effective_default",
        "timezones.tests.LegacyDatabaseTests.test_cursor_execute_returns_naive_datetime",
        "timezones.tests.NewDatabaseTests.test_cursor_execute_returns_naive_datetime"),
        "a raw cursor.execute() returns dates and datetimes as SQLite stores them (text): "
        "sqlite3's detect_types converters by declared column type are not applied (the "
        "ORM converts its own fields' values either way)"),
}
"""Tests that pass on stock and not on the gateway, by test id, with the reason."""

_RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s", re.M)
_OUTCOME = re.compile(r"^(OK|FAILED)(?: \((.*)\))?\s*$", re.M)
_BAD = re.compile(r"^(ERROR|FAIL|UNEXPECTED SUCCESS): (\S+) \(([^)\s]+)\)", re.M)


@dataclass
class Outcome:
    """One backend's run: its counts and the ids of the tests that did not pass."""

    backend: str
    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # test id -> ERROR/FAIL/...
    seconds: float = 0.0
    finished: bool = False
    output: str = ""

    @property
    def passed(self) -> int:
        return self.ran - sum(self.counts.values())

    def line(self) -> str:
        if not self.finished:
            return f"{self.backend:8} did not finish (see its output above)"
        extra = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return (f"{self.backend:8} ran {self.ran}, passed {self.passed}"
                f"{', ' + extra if extra else ''} ({self.seconds:.1f} s)")


def parse(backend: str, output: str, seconds: float) -> Outcome:
    """The counts and failing test ids out of runtests.py's output."""
    outcome = Outcome(backend, seconds=seconds, output=output)
    ran, results = _RAN.search(output), list(_OUTCOME.finditer(output))
    result = results[-1] if results else None  # the last one is the summary
    if ran is None or result is None:
        return outcome
    outcome.ran, outcome.finished = int(ran.group(1)), True
    for part in (result.group(2) or "").split(","):
        if "=" in part:
            name, value = part.strip().split("=")
            outcome.counts[name.replace("_", " ")] = int(value)
    for match in _BAD.finditer(output):
        outcome.bad[match.group(3)] = match.group(1)
    return outcome


def fetch_source(cache: Path, into: Path) -> Path:
    """The installed Django's source distribution (downloaded once into ``cache``),
    unpacked into ``into``; its ``tests`` dir."""
    import django

    version = django.__version__
    archive = cache / f"django-{version}.tar.gz"
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as download:
            subprocess.run([sys.executable, "-m", "pip", "download", f"django=={version}",
                            "--no-binary", ":all:", "--no-deps", "--no-build-isolation",
                            "--quiet", "-d", download], check=True, stdout=subprocess.DEVNULL)
            next(Path(download).glob("[Dd]jango-*.tar.gz")).replace(archive)
    with tarfile.open(archive) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)  # noqa: S202 (the registry's own archive)
    found = [p for p in into.glob("[Dd]jango-*/tests/runtests.py")]
    if not found:
        raise SystemExit(f"no tests/runtests.py in {archive.name}")
    return found[0].parent


def run_backend(backend: str, tests: Path, apps: list[str], parallel: int,
                workdir: Path, timeout: float) -> Outcome:
    """Run runtests.py with one backend's settings; its output is printed as it ends."""
    db_dir = workdir / backend
    db_dir.mkdir(exist_ok=True)
    env = dict(os.environ, DJANGO_PEER_DB_DIR=str(db_dir),
               PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
               PYTHONWARNINGS="ignore")
    command = [sys.executable, "runtests.py", f"--settings={SETTINGS[backend]}",
               f"--parallel={parallel}", "--noinput", *apps]
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=tests, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        output = done.stdout
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (
            exc.stdout or "")
        output += f"\n[run_suite] stopped after {timeout:.0f} s\n"
    return parse(backend, output, time.monotonic() - start)


def compare(stock: Outcome, gateway: Outcome) -> tuple[list[str], list[str]]:
    """Tests that did not pass on the gateway but did on stock: (known, unknown) ids."""
    worse = sorted(set(gateway.bad) - set(stock.bad))
    return [t for t in worse if t in KNOWN], [t for t in worse if t not in KNOWN]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", nargs="+", default=list(APPS))
    parser.add_argument("--backends", nargs="+", choices=list(SETTINGS),
                        default=list(SETTINGS))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--source", type=Path,
                        help="an unpacked Django source tree's tests dir (else downloaded)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sqlite-gateway",
                        help="where the downloaded source distribution is kept")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds each backend's run may take")
    parser.add_argument("--show-output", action="store_true",
                        help="print each run's whole output")
    parser.add_argument("--log", type=Path, help="write each run's output to LOG.<backend>")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="django-peer-") as temp:
        workdir = Path(temp)
        tests = args.source or fetch_source(args.cache, workdir)
        outcomes = {}
        for backend in args.backends:
            outcome = outcomes[backend] = run_backend(backend, tests, args.apps,
                                                      args.parallel, workdir, args.timeout)
            if args.show_output or not outcome.finished:
                print(outcome.output)
            if args.log:
                Path(f"{args.log}.{backend}").write_text(outcome.output)
    print(f"Django's tests, apps: {' '.join(args.apps)}; --parallel {args.parallel}")
    for outcome in outcomes.values():
        print(outcome.line())
    if not all(o.finished for o in outcomes.values()):
        return 1
    if set(outcomes) != set(SETTINGS):
        return 0 if not any(o.bad for o in outcomes.values()) else 1
    known, unknown = compare(outcomes["stock"], outcomes["gateway"])
    print(f"pass on stock, not on the gateway: {len(known) + len(unknown)} "
          f"({len(known)} known, {len(unknown)} not)")
    for test in known:
        print(f"  known   {test}: {KNOWN[test]}")
    for test in unknown:
        print(f"  NEW     {test} ({outcomes['gateway'].bad[test]})")
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
