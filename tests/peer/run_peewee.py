"""peewee's own test suite on stock ``SqliteDatabase`` and on ``GatewayDatabase``, compared.

    .venv/bin/python tests/peer/run_peewee.py --source /path/to/peewee-checkout [MODULE ...]

peewee publishes no source distribution on the package index, so its test
suite is not installable here: point ``--source`` at a checkout of
https://github.com/coleifer/peewee (its ``tests/`` package and the peewee and
playhouse modules of that same checkout are used; nothing of it is kept in
this repository). MODULE names ``tests.<name>`` modules; the default is the
suite's core modules (those that run on the shared test database).

Each side runs in its own child process and temporary directory. On the
gateway side, ``peewee.SqliteDatabase`` is replaced by a subclass of
:class:`~sqlite_gateway.integrations.peewee.GatewayDatabase` before the tests
import it (after playhouse's own modules, which keep the stock class), with
``lock_type=None`` (peewee's own default, so a plain ``atomic()`` is the
deferred kind the tests expect) and ``:memory:`` mapped to a new file in
the run's directory (the gateway needs a file). Prints both counts and every
test that passes on stock and not on the gateway; exits 1 if one of those
is not in :data:`EXPECTED`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CORE = ("db_tests", "fields", "manytomany", "models", "model_sql", "prefetch_tests",
        "results", "schema", "sql", "transactions", "with_related_tests")

# Tests that pass on stock and are known not to pass on the gateway, with why.
_ATTACH = ("ATTACH is refused on the gateway's shared connections (an attached file would "
           "stay attached for every caller; WAL commits are not atomic across files)")
_FOREIGN_KEYS_OFF = ("PRAGMA foreign_keys=0 at run time is refused: the gateway keeps foreign "
                     "keys on for every caller of its shared connections")
EXPECTED: dict[str, str] = {
    "tests.db_tests.TestAttachDatabase.test_attach": _ATTACH,
    "tests.db_tests.TestAttachDatabase.test_attach_detach": _ATTACH,
    "tests.db_tests.TestAttachDatabase.test_sqlite_schema_support": _ATTACH,
    "tests.schema.TestModelDDL.test_model_indexes_with_schema": _ATTACH,
    "tests.fields.TestForeignKeyConstraints.test_constraint_exists": _FOREIGN_KEYS_OFF,
    "tests.fields.TestForeignKeyConstraints.test_disable_constraint": _FOREIGN_KEYS_OFF,
    "tests.prefetch_tests.TestPrefetch.test_multiple_foreign_keys": _FOREIGN_KEYS_OFF,
    "tests.db_tests.TestSqliteDatabaseFeatures.test_pragmas":
        "sets cache_size and other PRAGMAs at run time: refused on shared connections "
        "(GatewayDatabase(pragmas=...) applies cache_size to every connection at open)",
    "tests.db_tests.TestSqliteDatabaseFeatures.test_pragmas_permanent":
        "the same, through pragma(..., permanent=True)",
    "tests.db_tests.TestSqliteDatabaseFeatures.test_timeout_semantics":
        "changes the busy timeout at run time and opens the file again with another "
        "timeout: one file has one gateway and one set of options per process",
    "tests.models.TestFunctionCoerce.test_function_coerce":
        "registers a function after connecting: the gateway sets functions up as it opens "
        "each connection (NotSupportedError says to register them first)",
    "tests.transactions.TestTransactionLockType.test_lock_type":
        "opens a second transaction on the same file in the same thread and expects "
        "'database is locked'; the gateway raises NestedCallError at once (it would wait "
        "for the thread's own write block)",
}

CHILD = r"""
import itertools, json, os, sys, unittest
source, backend, out, modules = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.path[:0] = [source]
os.environ["PEEWEE_TEST_BACKEND"] = "sqlite"
import peewee, pkgutil, importlib, playhouse
for info in pkgutil.iter_modules(playhouse.__path__):  # keep their stock base classes
    try:
        importlib.import_module("playhouse." + info.name)
    except Exception:
        pass
if backend == "gateway":
    from sqlite_gateway.integrations.peewee import GatewayDatabase
    counter = itertools.count()

    class SuiteDatabase(GatewayDatabase):
        # ":memory:" stays the database's name (tests read it back) and opens a
        # new file of the run's directory.
        def __init__(self, database, *args, **kwargs):
            kwargs.setdefault("lock_type", None)
            super().__init__(database, *args, **kwargs)

        def init(self, database, *args, **kwargs):
            memory = database == ":memory:"
            if memory:
                database = os.path.abspath(f"memory-{next(counter)}.db")
            super().init(database, *args, **kwargs)
            if memory:
                self._file, self.database = database, ":memory:"

        def _connect(self):
            file = getattr(self, "_file", None)
            if file is None or self.database != ":memory:":
                return super()._connect()
            self.database = file
            try:
                return super()._connect()
            finally:
                self.database = ":memory:"

    stock = peewee.SqliteDatabase

    def new(cls, *args, **kwargs):  # SqliteDatabase(...) makes a SuiteDatabase
        return object.__new__(SuiteDatabase if cls is stock else cls)

    stock.__new__ = staticmethod(new)
suite = unittest.TestLoader().loadTestsFromNames([f"tests.{m}" for m in modules])


class Recorder(unittest.TextTestResult):
    outcomes = {}

    def addSuccess(self, test):
        super().addSuccess(test); self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        super().addFailure(test, err); self.outcomes[test.id()] = "fail"

    def addError(self, test, err):
        super().addError(test, err); self.outcomes[test.id()] = "error"

    def addSkip(self, test, reason):
        super().addSkip(test, reason); self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err); self.outcomes[test.id()] = "pass"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test); self.outcomes[test.id()] = "fail"


runner = unittest.TextTestRunner(resultclass=Recorder, verbosity=0, stream=sys.stderr)
runner.run(suite)
with open(out, "w") as f:
    json.dump(Recorder.outcomes, f)
"""


def run_side(source: Path, backend: str, modules: list[str], limit: float) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix=f"peewee-{backend}-") as work:
        out = os.path.join(work, "outcomes.json")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-c", CHILD, str(source), backend, out,
                               *modules], cwd=work, env=env, capture_output=True, text=True,
                              timeout=limit)
        if not os.path.exists(out):
            sys.stderr.write(proc.stderr[-5000:])
            raise SystemExit(f"the {backend} run ended without results (exit {proc.returncode})")
        with open(out) as f:
            outcomes: dict[str, str] = json.load(f)
        if backend == "gateway":
            last = [line for line in proc.stderr.splitlines() if line.startswith("Ran ")]
            print(f"gateway run: {last[-1] if last else 'no summary'}")
        return outcomes


def counts(outcomes: dict[str, str]) -> str:
    kinds = ("pass", "fail", "error", "skip")
    return ", ".join(f"{sum(1 for v in outcomes.values() if v == k)} {k}" for k in kinds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a peewee checkout")
    parser.add_argument("--limit", type=float, default=1800.0, help="seconds per side")
    parser.add_argument("modules", nargs="*", default=list(CORE))
    args = parser.parse_args(argv)
    if not (args.source / "tests" / "base.py").exists():
        parser.error(f"{args.source} is not a peewee checkout (no tests/base.py)")
    stock = run_side(args.source, "stock", args.modules, args.limit)
    gateway = run_side(args.source, "gateway", args.modules, args.limit)
    print(f"modules: {' '.join(args.modules)}")
    print(f"stock SqliteDatabase: {len(stock)} tests: {counts(stock)}")
    print(f"GatewayDatabase:      {len(gateway)} tests: {counts(gateway)}")
    lost = sorted(t for t, v in stock.items() if v == "pass" and gateway.get(t) != "pass")
    gained = sorted(t for t, v in gateway.items() if v == "pass" and stock.get(t) != "pass")
    print(f"pass on stock, not on the gateway: {len(lost)}")
    for test in lost:
        print(f"  {test}: {gateway.get(test, 'missing')}"
              + (f"  (expected: {EXPECTED[test]})" if test in EXPECTED else ""))
    if gained:
        print(f"pass on the gateway, not on stock: {len(gained)}")
        for test in gained:
            print(f"  {test}: stock {stock.get(test, 'missing')}")
    return 1 if any(test not in EXPECTED for test in lost) else 0


if __name__ == "__main__":
    sys.exit(main())
