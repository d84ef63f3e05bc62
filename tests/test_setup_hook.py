"""The connection_setup option: run on the writer, on every reader, and again after a reopen."""

from __future__ import annotations

import re
import threading
import uuid

import apsw
import pytest
from benchmarks.vfs.fault import FaultVFS

from sqlite_gateway import Gateway, GatewayClosed, GatewayError, State


class Registry:
    """A setup hook that registers REGEXP and a collation, and counts its calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: list[str] = []  # "reader" or "writer", one per call

    def __call__(self, conn: apsw.Connection) -> None:
        conn.create_scalar_function(
            "regexp", lambda pattern, value: value is not None and re.search(
                pattern, value) is not None, 2, deterministic=True)
        conn.create_collation("reversed", lambda a, b: (a < b) - (a > b))
        with self.lock:
            self.kinds.append("reader" if conn.readonly("main") else "writer")

    @property
    def readers(self) -> int:
        return self.kinds.count("reader")

    @property
    def writers(self) -> int:
        return self.kinds.count("writer")


@pytest.mark.parametrize("read_mode", ["inline", "threads"])
def test_functions_and_collations_work_on_the_writer_and_every_reader(db_path, read_mode):
    hook = Registry()
    with Gateway(db_path, readers=3, read_mode=read_mode, connection_setup=hook) as db:
        db.execute("CREATE TABLE pages(name TEXT)")
        db.executemany("INSERT INTO pages VALUES (?)", [("home",), ("about",), ("help",)])
        query = "SELECT name FROM pages WHERE name REGEXP ? ORDER BY name COLLATE reversed"
        errors = []

        def read():
            try:
                for _ in range(50):
                    assert db.execute(query, ("^h",)).rows == (("home",), ("help",))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert db.stats()["reads"] >= 300  # they ran on the readers
        assert db.transaction(lambda conn: conn.execute(query, ("o",)).rows) == (
            ("home",), ("about",))
        with db.writer() as w:
            assert w.execute(query, ("p$",)).rows == (("help",),)
        assert hook.writers == 1 and 1 <= hook.readers <= 3


def test_the_hook_runs_again_when_the_writer_is_reopened(db_path):
    hook = Registry()
    with Gateway(db_path, readers=0, connection_setup=hook) as db:
        db.execute("CREATE TABLE t(x TEXT)")
        # Transaction control inside an exclusive fn makes the worker reopen its connection.
        db.run_exclusive(lambda conn: conn.execute("BEGIN; COMMIT"))
        db.execute("INSERT INTO t VALUES ('abc')")  # runs after the reopen
        assert hook.writers == 2
        assert db.execute("SELECT x REGEXP 'b' FROM t").scalar() == 1


def test_the_hook_runs_again_after_an_io_error_reopen(db_path):
    shim = FaultVFS(f"faulty-{uuid.uuid4().hex[:8]}")
    hook = Registry()
    try:
        with Gateway(db_path, readers=0, vfs=shim.name, connection_setup=hook) as db:
            db.execute("CREATE TABLE t(x TEXT)")
            shim.faults.arm(syncs=1, only="-wal")
            with pytest.raises(apsw.IOError):
                db.execute("INSERT INTO t VALUES ('lost')")
            shim.faults.off()
            db.execute("INSERT INTO t VALUES ('abc')")
            assert hook.writers == 2  # the writer was reopened, and set up again
            assert db.execute("SELECT count(*) FROM t WHERE x REGEXP '^a'").scalar() == 1
    finally:
        shim.faults.off()
        shim.unregister()


@pytest.mark.parametrize("read_mode", ["inline", "threads"])
@pytest.mark.parametrize("where", ["writer", "reader"])
def test_a_hook_that_raises_fails_start_and_leaves_nothing_open(db_path, read_mode, where):
    error = RuntimeError("no such extension")

    def setup(conn: apsw.Connection) -> None:
        if conn.readonly("main") == (where == "reader"):
            raise error

    db = Gateway(db_path, readers=2, read_mode=read_mode, connection_setup=setup)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError) as caught:
        db.start()
    assert caught.value is error
    assert db.state is State.CLOSED
    assert db._worker.stopped.is_set()
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    for thread in leftover:
        thread.join(10)  # reader threads end once their queue is closed
    assert not [t for t in leftover if t.is_alive()]
    with pytest.raises((GatewayClosed, GatewayError)):
        db.execute("SELECT 1")
    db.close()  # idempotent on a gateway that never started
    # Nothing holds the file: a plain gateway opens it and writes at once.
    with Gateway(db_path, busy_timeout=0) as again:
        again.execute("CREATE TABLE t(x)")


def test_a_hook_that_fails_when_the_writer_reopens_breaks_the_gateway_clearly(db_path):
    calls = []

    def setup(conn: apsw.Connection) -> None:
        calls.append(conn)
        if len(calls) > 1:
            raise OSError("the extension file went away")

    with Gateway(db_path, readers=0, connection_setup=setup) as db:
        db.execute("CREATE TABLE t(x)")
        db.run_exclusive(lambda conn: conn.execute("BEGIN; COMMIT"))  # forces a reopen
        with pytest.raises(GatewayClosed, match="extension file went away"):
            db.execute("INSERT INTO t VALUES (1)")
        assert db.state is State.BROKEN


def test_setup_must_be_callable(db_path):
    with pytest.raises(ValueError, match="^connection_setup"):
        Gateway(db_path, connection_setup="register_functions")


def test_a_config_names_the_hook_by_its_import_path(db_path):
    from sqlite_gateway.integrations.settings import parse_settings

    settings = parse_settings(
        {"DB_PATH": db_path, "DB_CONNECTION_SETUP": "test_setup_hook:add_one"},
        prefix="DB_", upper=True)
    assert settings.options["connection_setup"] is add_one
    with Gateway(db_path, **settings.options) as db:
        assert db.execute("SELECT add_one(41)").scalar() == 42
    for bad in ("test_setup_hook", "test_setup_hook:nothing_here", "no_such_module:f"):
        with pytest.raises(ValueError, match="^DB_CONNECTION_SETUP"):
            parse_settings({"DB_CONNECTION_SETUP": bad}, prefix="DB_", upper=True)


def add_one(conn: apsw.Connection) -> None:
    conn.create_scalar_function("add_one", lambda x: x + 1, 1, deterministic=True)
