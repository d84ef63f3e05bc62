"""Settings a caller's SQL may not change on the shared connections are refused, with
the reason and the way in; maintenance PRAGMAs and reads still pass.

Regression: ``PRAGMA hard_heap_limit=65536`` through execute() made every SQLite call in the
process fail with NoMemError; other PRAGMAs (case_sensitive_like, recursive_triggers,
defer_foreign_keys, ...) and ATTACH changed the writer for every later caller.
"""

from __future__ import annotations

import json

import apsw
import pytest
from conftest import run_python

from sqlite_gateway import Gateway
from sqlite_gateway.errors import ConnectionSettingError

MODES = [{}, {"readers": 2}, {"readers": 2, "read_mode": "threads"}]
MODE_IDS = ["writer-only", "readers-inline", "readers-threads"]

# One setting form of each PRAGMA a caller may not set (reading it stays allowed).
# (Those that change the whole process are tried in a child process, below: before
# the fix they broke every later SQLite call of the process that ran them.)
REFUSED = [
    # results, integrity checks or safety of every later caller
    "PRAGMA case_sensitive_like = ON", "PRAGMA reverse_unordered_selects = 1",
    "PRAGMA recursive_triggers = ON", "PRAGMA trusted_schema = ON",
    "PRAGMA legacy_alter_table = ON", "PRAGMA defer_foreign_keys = ON",
    "PRAGMA cell_size_check = ON", "PRAGMA count_changes = 1", "PRAGMA full_column_names = 1",
    "PRAGMA short_column_names = 0", "PRAGMA empty_result_callbacks = 1",
    "PRAGMA read_uncommitted = 1", "PRAGMA secure_delete = OFF", "PRAGMA fullfsync = 1",
    "PRAGMA checkpoint_fullfsync = 1",
    # the connection's resources and plans, for every later caller
    "PRAGMA threads = 4", "PRAGMA mmap_size = 268435456", "PRAGMA cache_size = 1",
    "PRAGMA main.cache_size = -100000", "PRAGMA default_cache_size = 10",
    "PRAGMA cache_spill = 0", "PRAGMA temp_store = MEMORY", "PRAGMA automatic_index = 0",
    "PRAGMA analysis_limit = 1", "PRAGMA journal_size_limit = 0",
    # a later statement of a string
    "SELECT 1; PRAGMA case_sensitive_like = 1",
]


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_a_pragma_that_changes_the_connection_for_later_callers_is_refused(db_path, options):
    """With readers, execute() is tried on a reader first: it must refuse there too."""
    with Gateway(db_path, **options) as db:
        db.execute("CREATE TABLE t(name TEXT)")
        db.execute("INSERT INTO t VALUES ('Abc')")
        for sql in REFUSED:
            with pytest.raises(ConnectionSettingError, match="refused"):
                db.execute(sql)
            with pytest.raises(ConnectionSettingError):
                db.transaction(lambda conn: conn.execute(sql))  # noqa: B023 (called at once)
        # A later caller still gets SQLite's defaults (LIKE is case-insensitive).
        assert db.execute("SELECT count(*) FROM t WHERE name LIKE 'abc'").scalar() == 1
        assert db.transaction(
            lambda conn: conn.execute("PRAGMA case_sensitive_like").rows) == ()
        assert db.transaction(lambda conn: conn.execute("PRAGMA recursive_triggers").scalar()) == 0


def test_the_refusal_names_the_reason_and_the_way_in(gateway):
    with pytest.raises(ConnectionSettingError, match="run_exclusive"):
        gateway.execute("PRAGMA cache_size = 10")
    with pytest.raises(ConnectionSettingError, match="Gateway options"):
        gateway.execute("PRAGMA synchronous = OFF")


# Per-database maintenance, settings stored in the file, one-off actions, and reads.
ALLOWED = [
    "PRAGMA user_version = 7", "PRAGMA application_id = 42", "PRAGMA optimize",
    "PRAGMA optimize(0x10002)", "PRAGMA shrink_memory", "PRAGMA incremental_vacuum(10)",
    "PRAGMA integrity_check(5)", "PRAGMA quick_check", "PRAGMA foreign_key_check(t)",
    "PRAGMA table_info(t)", "PRAGMA table_xinfo(t)", "PRAGMA index_list(t)",
    "PRAGMA foreign_key_list(t)", "PRAGMA page_size = 4096", "PRAGMA auto_vacuum = NONE",
    "PRAGMA encoding = 'UTF-8'", "PRAGMA hard_heap_limit", "PRAGMA soft_heap_limit",
    "PRAGMA threads", "PRAGMA cache_size", "PRAGMA mmap_size", "PRAGMA temp_store",
    "PRAGMA case_sensitive_like", "PRAGMA pragma_list", "PRAGMA database_list",
]


@pytest.mark.parametrize("options", MODES[:2], ids=MODE_IDS[:2])
def test_maintenance_pragmas_and_reads_still_pass(db_path, options):
    with Gateway(db_path, **options) as db:
        db.execute("CREATE TABLE t(x)")
        for sql in ALLOWED:
            db.execute(sql)
            db.transaction(lambda conn: conn.execute(sql))  # noqa: B023 (called at once)
        assert db.execute("PRAGMA user_version").scalar() == 7


def test_every_pragma_of_this_sqlite_is_decided():
    """A PRAGMA added by a newer SQLite must be classified here and in connection.py."""
    from sqlite_gateway.connection import _OWNED_PRAGMAS
    decided = {s.split()[1].split("(")[0].split(".")[-1].lower() for s in ALLOWED}
    # Read-only or debug PRAGMAs with no setting form, and the gateway's own ones.
    decided |= {"collation_list", "compile_options", "data_version", "freelist_count",
                "function_list", "index_info", "index_xinfo", "module_list", "page_count",
                "table_list", "wal_checkpoint"}
    conn = apsw.Connection(":memory:")
    names = {row[0] for row in conn.execute("PRAGMA pragma_list")}
    conn.close()
    assert names - decided - _OWNED_PRAGMAS == set()


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("sql", ["ATTACH ':memory:' AS other", "DETACH other",
                                 "SELECT 1; ATTACH ':memory:' AS other"])
def test_attach_is_refused(db_path, sql, options):
    """An attached database stays attached for every later caller, and a transaction
    over several files in WAL mode is not atomic across them."""
    with Gateway(db_path, **options) as db:
        with pytest.raises(ConnectionSettingError, match="ATTACH"):
            db.execute(sql)
        with pytest.raises(ConnectionSettingError):
            db.transaction(lambda conn: conn.execute(sql))
        assert [r[1] for r in db.transaction(
            lambda conn: conn.execute("PRAGMA database_list").rows)] == ["main"]


def test_run_exclusive_may_still_attach(gateway):
    """Maintenance owns the raw connection for its call (e.g. to copy from another file)."""
    def attach_and_detach(conn):
        conn.execute("ATTACH ':memory:' AS scratch")
        names = [r[1] for r in conn.execute("PRAGMA database_list")]
        conn.execute("DETACH scratch")
        return names

    assert gateway.run_exclusive(attach_and_detach) == ["main", "scratch"]


_HEAP_LIMIT_CHILD = """
import json, sys
import apsw
from sqlite_gateway import Gateway
from sqlite_gateway.errors import ConnectionSettingError
out = {}
for readers in (0, 2):
    with Gateway(sys.argv[1] + str(readers), readers=readers) as db:
        db.execute("CREATE TABLE t(x)")
        for sql in ("PRAGMA hard_heap_limit = 65536", "PRAGMA soft_heap_limit(65536)",
                    "PRAGMA temp_store_directory = '/nonexistent'"):
            try:
                db.execute(sql)
                verdict = "applied"
            except ConnectionSettingError as exc:
                verdict = "refused" if "every SQLite connection in this process" in str(exc) \
                    else "refused: " + str(exc)
            except apsw.Error as exc:
                verdict = type(exc).__name__
            try:  # does the process still work? (a new connection, some memory)
                db.execute("INSERT INTO t SELECT zeroblob(100000)")
                db.execute("SELECT count(*) FROM t")
                db.execute("CREATE TEMP TABLE IF NOT EXISTS tt(x)")
                verdict += "; later calls work"
            except apsw.Error as exc:
                verdict += "; later calls fail: " + type(exc).__name__
            out[f"{readers} {sql}"] = verdict
print(json.dumps(out))
"""


def test_a_process_wide_heap_limit_is_refused_and_the_process_keeps_working(tmp_path):
    """(In a child process: before the fix it broke every SQLite call of the process.)"""
    child = run_python(_HEAP_LIMIT_CHILD, str(tmp_path / "heap.db"), timeout=60)
    assert child.returncode == 0, child.stderr
    verdicts = json.loads(child.stdout)
    assert len(verdicts) == 6
    for verdict in verdicts.values():
        assert verdict == "refused; later calls work", verdicts
