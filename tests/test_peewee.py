"""peewee models on the gateway (GatewayDatabase): the patterns peewee's documentation teaches."""

from __future__ import annotations

import datetime
import importlib.util
import subprocess
import sys
import threading

import pytest

from sqlite_gateway import NestedCallError, WriteBlockExpired
from sqlite_gateway.integrations.registry import close as close_gateway

# peewee is imported by the tests themselves, not at collection: it imports the stdlib
# sqlite3, whose presence changes what the same-file check of other tests reports.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("peewee") is None,
                                reason="needs the peewee extra")

WIDE = 60


def models(db):
    from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model

    class Base(Model):
        class Meta:
            database = db

    class User(Base):
        name = CharField(unique=True)
        joined = DateTimeField(default=datetime.datetime(2026, 12, 6, 5, 30))

    class Tweet(Base):
        user = ForeignKeyField(User, backref="tweets", on_delete="CASCADE")
        body = CharField()
        likes = IntegerField(default=0)

    class Counter(Base):
        n = IntegerField(default=0)

    return User, Tweet, Counter


@pytest.fixture
def db(db_path):
    from sqlite_gateway.integrations.peewee import GatewayDatabase
    database = GatewayDatabase(db_path, readers=4, regexp_function=True)
    User, Tweet, Counter = models(database)
    database.create_tables([User, Tweet, Counter])
    try:
        yield database, User, Tweet, Counter
    finally:
        database.close()
        close_gateway(db_path, timeout=WIDE)


def test_read_modify_write_in_atomic_from_four_threads_is_exact(db):
    database, _, _, Counter = db
    Counter.create(n=0)
    errors = []

    def increment():
        try:
            for _ in range(10):
                with database.atomic():
                    counter = Counter.get_by_id(1)
                    counter.n += 1
                    counter.save()
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WIDE)
    assert not errors, errors
    assert Counter.get_by_id(1).n == 40
    assert database.gateway.stats()["write_blocks"] >= 40


def test_a_nested_atomic_rolls_back_alone(db):
    from peewee import IntegrityError
    database, User, _, _ = db
    with database.atomic():
        User.create(name="kept")
        with pytest.raises(IntegrityError):
            with database.atomic():
                User.create(name="undone")
                User.create(name="kept")  # UNIQUE
        with database.atomic() as inner:
            User.create(name="rolled back")
            inner.rollback()
        User.create(name="kept too")
    assert [u.name for u in User.select().order_by(User.id)] == ["kept", "kept too"]


def test_an_exception_in_atomic_rolls_everything_back(db):
    database, User, _, _ = db
    with pytest.raises(KeyError):
        with database.atomic():
            User.create(name="a")
            with database.atomic():
                User.create(name="b")
            raise KeyError("mine")
    assert User.select().count() == 0


def test_atomic_commits_before_it_returns(db, db_path):
    database, User, _, _ = db
    with database.atomic():
        User.create(name="durable")
    import apsw
    outside = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert outside.execute("SELECT name FROM user").fetchall() == [("durable",)]
    finally:
        outside.close()


def test_reads_go_to_readers_and_writes_are_single_gateway_calls(db):
    database, User, _, _ = db
    gateway = database.gateway
    before = gateway.stats()
    User.create(name="a")
    User.update(name="b").where(User.name == "a").execute()
    assert [u.name for u in User.select()] == ["b"]
    assert User.get(User.name == "b").name == "b"
    after = gateway.stats()
    assert after["reads"] - before["reads"] == 2
    assert after["requests"] - before["requests"] == 2  # the INSERT and the UPDATE
    assert after["write_blocks"] == before["write_blocks"]


def test_get_or_create_bulk_insert_joins_and_aggregates(db):
    from peewee import JOIN, fn
    database, User, Tweet, _ = db
    alice, created = User.get_or_create(name="alice")
    assert created
    assert User.get_or_create(name="alice") == (alice, False)
    bob = User.create(name="bob")
    with database.atomic():
        Tweet.insert_many([{"user": alice, "body": f"a{i}", "likes": i} for i in range(5)]
                          ).execute()
        Tweet.bulk_create([Tweet(user=bob, body=f"b{i}", likes=10) for i in range(3)],
                          batch_size=2)
    query = (User.select(User.name, fn.COUNT(Tweet.id).alias("n"), fn.SUM(Tweet.likes)
                         .alias("likes"))
             .join(Tweet, JOIN.LEFT_OUTER).group_by(User.name).order_by(User.name))
    assert [(u.name, u.n, u.likes) for u in query] == [("alice", 5, 10), ("bob", 3, 30)]
    assert Tweet.select().where(Tweet.likes > 3).count() == 4
    assert [t.body for t in bob.tweets.order_by(Tweet.body)] == ["b0", "b1", "b2"]
    assert Tweet.delete().where(Tweet.user == alice).execute() == 5  # the statement's rows
    bob.delete_instance()
    assert Tweet.select().count() == 0  # the cascade


def test_date_parts_regexp_and_json_helpers_work_on_the_readers(db):
    from peewee import fn
    database, User, _, _ = db
    User.create(name="alice", joined=datetime.datetime(2025, 3, 4, 10, 0))
    User.create(name="bob", joined=datetime.datetime(2026, 7, 8, 11, 0))
    before = database.gateway.stats()["reads"]
    assert [u.name for u in User.select().where(User.joined.year == 2026)] == ["bob"]
    assert [u.name for u in User.select().where(User.joined.month == 3)] == ["alice"]
    assert User.select(fn.date_trunc("year", User.joined)).where(
        User.name == "alice").scalar() == "2025-01-01 00:00:00"
    assert [u.name for u in User.select().where(User.name.regexp("^b"))] == ["bob"]
    assert database.execute_sql("SELECT _pw_json_contains(?, ?)",
                                ('{"a": [1, 2]}', '{"a": [1]}')).fetchone()[0] == 1
    assert database.gateway.stats()["reads"] - before == 5  # every one of them on a reader


def test_app_functions_aggregates_collations_and_window_functions(db_path):
    from sqlite_gateway.integrations.peewee import GatewayDatabase
    database = GatewayDatabase(db_path, readers=2)

    @database.func("twice", 1, deterministic=True)
    def twice(x):
        return x * 2

    @database.aggregate("product")
    class Product:
        def __init__(self):
            self.value = 1

        def step(self, x):
            self.value *= x

        def finalize(self):
            return self.value

    @database.collation("backwards")
    def backwards(a, b):
        return (a < b) - (a > b)

    @database.window_function("running", 1)
    class Running:
        def __init__(self):
            self.total = 0

        def step(self, x):
            self.total += x

        def inverse(self, x):
            self.total -= x

        def value(self):
            return self.total

        def finalize(self):
            return self.total

    try:
        database.execute_sql("CREATE TABLE t(x INTEGER, s TEXT)")
        database.execute_sql("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        assert database.execute_sql("SELECT twice(x) FROM t ORDER BY x").fetchall() == [
            (2,), (4,), (6,)]
        assert database.execute_sql("SELECT product(x) FROM t").fetchone() == (6,)
        assert database.execute_sql("SELECT s FROM t ORDER BY s COLLATE backwards"
                                    ).fetchall() == [("c",), ("b",), ("a",)]
        assert database.execute_sql(
            "SELECT running(x) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) "
            "FROM t").fetchall() == [(1,), (3,), (5,)]
        with database.atomic():  # and on the writer
            assert database.execute_sql("SELECT product(twice(x)) FROM t").fetchone() == (48,)
    finally:
        database.close()
        close_gateway(db_path, timeout=WIDE)


def test_pragmas_become_gateway_options_or_are_refused(db_path):
    from sqlite_gateway.integrations.peewee import GatewayDatabase
    database = GatewayDatabase(db_path, pragmas={"journal_mode": "wal", "foreign_keys": 1,
                                                 "synchronous": 1, "cache_size": -4000,
                                                 "busy_timeout": 2500})
    try:
        assert database.gateway.options.synchronous == "NORMAL"
        assert database.gateway.options.busy_timeout == 2.5
        assert database.execute_sql("PRAGMA cache_size").fetchone() == (-4000,)
    finally:
        database.close()
        close_gateway(db_path, timeout=WIDE)
    for pragmas, message in [({"journal_mode": "delete"}, "journal_mode=wal"),
                             ({"foreign_keys": 0}, "foreign_keys=1"),
                             ({"locking_mode": "exclusive"}, "not supported"),
                             ({"cache_size": "lots"}, "whole number")]:
        with pytest.raises(ValueError, match=message):
            GatewayDatabase(db_path, pragmas=pragmas)
    with pytest.raises(ValueError, match="memory"):
        GatewayDatabase(":memory:")


def test_the_hold_limit_and_nested_calls_inside_atomic(db_path):
    from sqlite_gateway.integrations.peewee import GatewayDatabase
    database = GatewayDatabase(db_path, hold_limit=0.3)
    User, _, _ = models(database)
    try:
        database.create_tables([User])
        with pytest.raises(NestedCallError):
            with database.atomic():
                User.create(name="a")
                database.gateway.execute("DELETE FROM user")  # would wait for its own block
        with pytest.raises(WriteBlockExpired):
            with database.atomic():
                User.create(name="slow")
                threading.Event().wait(1.0)  # slow work with the writer held
                User.create(name="late")
        assert User.select().count() == 0
    finally:
        database.close()
        close_gateway(db_path, timeout=WIDE)


def test_the_module_names_the_extra_when_peewee_is_missing():
    code = ("import sys; sys.modules['peewee'] = None\n"
            "try:\n    import sqlite_gateway.integrations.peewee\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "sqlite-gateway[peewee]" in out


def test_a_table_rebuild_cannot_cascade_silently(db_path):
    from sqlite_gateway.integrations.peewee import GatewayDatabase
    # peewee's migrator reads foreign_keys before a table rebuild and turns them
    # off first; the gateway keeps them on, so the rebuild is refused with a clear
    # error instead of its DROP TABLE deleting the child rows by cascade.
    migrate = pytest.importorskip("playhouse.migrate")
    database = GatewayDatabase(db_path, timeout=100)  # a long busy timeout is accepted
    try:
        database.execute_sql("CREATE TABLE parent (id INTEGER NOT NULL PRIMARY KEY, "
                             "name TEXT, extra INTEGER DEFAULT 0)")
        database.execute_sql("CREATE TABLE child (id INTEGER NOT NULL PRIMARY KEY, parent_id "
                             "INTEGER NOT NULL REFERENCES parent (id) ON DELETE CASCADE)")
        database.execute_sql("INSERT INTO parent (name) VALUES ('p1')")
        database.execute_sql("INSERT INTO child (parent_id) VALUES (1)")
        assert database.pragma("foreign_keys") == 1  # on a reader, as on the writer
        migrator = migrate.SqliteMigrator(database)
        with pytest.raises(Exception, match="foreign_keys"):
            with migrator.migration_context():
                migrate.migrate(migrator.drop_column("parent", "extra", legacy=True))
        assert database.execute_sql("SELECT count(*) FROM child").fetchone() == (1,)
        migrate.migrate(migrator.drop_column("parent", "extra"))  # SQLite's own DROP COLUMN
        assert database.execute_sql("SELECT count(*) FROM child").fetchone() == (1,)
    finally:
        database.close()
        close_gateway(db_path, timeout=WIDE)
