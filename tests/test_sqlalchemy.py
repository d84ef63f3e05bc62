"""SQLAlchemy on the gateway: the sqlite+gateway dialect, sessions, the helpers."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import in_threads

sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import (DateTime, ForeignKey, String, create_engine, event,  # noqa: E402
                        exc, select, text)
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, mapped_column,  # noqa: E402
                            relationship)

from sqlite_gateway import Gateway, NestedCallError  # noqa: E402
from sqlite_gateway.integrations import registry  # noqa: E402
from sqlite_gateway.integrations.sqlalchemy import engine_for, run_in_transaction  # noqa: E402


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    joined: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")


class Counter(Base):
    __tablename__ = "counter"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


@pytest.fixture
def url(tmp_path):
    yield f"sqlite+gateway:///{tmp_path / 'app.db'}"
    registry.close_all()


@pytest.fixture
def engine(url):
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_the_url_alone_selects_the_dialect_and_types_its_options(tmp_path):
    engine = create_engine(f"sqlite+gateway:///{tmp_path / 'o.db'}?readers=2&synchronous=normal"
                           "&begin=immediate")
    with engine.connect() as conn:
        gateway = conn.connection.dbapi_connection.gateway
        assert (gateway.options.readers, gateway.options.synchronous) == (2, "NORMAL")
        assert conn.connection.dbapi_connection._mode == "immediate"
    registry.close_all()


def test_relative_and_absolute_paths_as_the_stock_dialect(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with create_engine("sqlite+gateway:///rel.db").connect() as conn:
        conn.execute(text("CREATE TABLE t (x)"))
        conn.commit()
    assert (tmp_path / "rel.db").exists()
    with create_engine(f"sqlite+gateway:///{tmp_path}/rel.db").connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    registry.close_all()


@pytest.mark.parametrize("query, message", [
    ("readerz=2", "unknown key"), ("readers=many", "readers must be"),
    ("begin=later", "begin must be"), ("path=x.db", "unknown key")])
def test_a_bad_url_key_fails_at_create_engine(tmp_path, query, message):
    with pytest.raises(exc.ArgumentError, match=message):
        create_engine(f"sqlite+gateway:///{tmp_path / 'x.db'}?{query}")
    assert not (tmp_path / "x.db").exists()


def test_the_stock_drivers_thread_and_cache_keys_are_accepted(tmp_path):
    engine = create_engine(f"sqlite+gateway:///{tmp_path / 'k.db'}"
                           "?check_same_thread=false&cached_statements=10")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    registry.close_all()


def test_memory_is_refused_at_create_engine():
    with pytest.raises(exc.ArgumentError, match="needs a database file"):
        create_engine("sqlite+gateway:///:memory:")


def test_engines_on_one_file_share_one_gateway(url, engine):
    other = create_engine(url)
    with engine.connect() as a, other.connect() as b:
        assert a.connection.dbapi_connection.gateway is b.connection.dbapi_connection.gateway


def test_plain_session_code_runs_unchanged(engine):
    when = datetime.datetime(2026, 12, 6, 5, 30)
    with Session(engine) as session:
        ada = User(name="ada", joined=when, posts=[Post(title="one"), Post(title="two")])
        session.add(ada)
        session.commit()
        assert ada.id == 1
    with Session(engine) as session:
        ada = session.scalars(select(User).where(User.name == "ada")).one()
        assert ada.joined == when and [p.title for p in ada.posts] == ["one", "two"]
        assert session.scalars(select(User).where(User.name == "nobody")).all() == []
        ada.name = "Ada"
        session.delete(ada.posts[0])
        session.commit()
    with Session(engine) as session:
        assert session.scalars(select(Post.title)).all() == ["two"]
        assert session.get(User, 1).name == "Ada"


def test_integrity_error_is_sqlalchemys_and_the_session_goes_on(engine):
    with Session(engine) as session:
        session.add(User(name="ada"))
        session.commit()
        session.add(User(name="ada"))
        with pytest.raises(exc.IntegrityError, match="UNIQUE"):
            session.commit()
        session.rollback()
        session.add(User(name="bob"))
        session.commit()
        assert session.scalars(select(User.name).order_by(User.id)).all() == ["ada", "bob"]


def test_begin_nested_rolls_back_alone(engine):
    with Session(engine) as session:
        session.add(User(name="kept"))
        nested = session.begin_nested()
        session.add(User(name="undone"))
        session.flush()
        nested.rollback()
        with session.begin_nested():
            session.add(User(name="also kept"))
        session.commit()
    with Session(engine) as session:
        assert session.scalars(select(User.name).order_by(User.id)).all() == [
            "kept", "also kept"]


def test_a_read_only_session_never_holds_the_writer(engine):
    with Session(engine) as session:
        session.scalars(select(User)).all()
        gateway = session.connection().connection.dbapi_connection.gateway
        # Another thread takes the writer while this session is open.
        done = threading.Event()

        def write():
            with gateway.writer(timeout=5) as w:
                w.execute("INSERT INTO users (name) VALUES ('other')")
            done.set()

        other = threading.Thread(target=write)
        other.start()
        other.join(10)
        assert done.is_set()
        session.commit()


def _bump_from_threads(engine):
    with Session(engine) as session:
        session.add(Counter(id=1, n=0))
        session.commit()

    def bump():
        for _ in range(10):
            with Session(engine) as session:
                counter = session.get(Counter, 1)
                counter.n += 1
                session.commit()

    in_threads(bump, 4)
    with Session(engine) as session:
        return session.get(Counter, 1).n


def test_begin_immediate_makes_read_modify_write_exact(url):
    engine = create_engine(url + "?begin=immediate")
    Base.metadata.create_all(engine)
    assert _bump_from_threads(engine) == 40


def test_the_stock_begin_immediate_recipe_gets_one_clear_error(engine):
    @event.listens_for(engine, "connect")
    def no_pysqlite_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()
    with pytest.raises(exc.InvalidRequestError, match=r"\?begin=immediate"):
        with Session(engine) as session:
            session.add(User(name="x"))
            session.commit()


def test_a_session_holding_the_writer_that_calls_the_gateway_fails_at_once(engine):
    with Session(engine) as session:
        session.add(User(name="holder"))
        session.flush()  # this thread holds the write block now
        gateway = session.connection().connection.dbapi_connection.gateway
        with pytest.raises(NestedCallError):
            gateway.execute("INSERT INTO users (name) VALUES ('waits for itself')")
        with Session(engine) as second, pytest.raises(NestedCallError):
            second.add(User(name="second session"))
            second.flush()
        session.commit()
    with Session(engine) as session:
        assert session.scalars(select(User.name)).all() == ["holder"]


def test_run_in_transaction_commits_with_the_fn_and_rolls_back_whole(engine):
    def add(session, name):
        session.add(User(name=name))
        session.flush()
        return session.scalars(select(User.id).where(User.name == name)).one()

    assert run_in_transaction(engine, add, "ada") == 1

    def fails(session):
        session.add(User(name="undone"))
        session.flush()
        raise KeyError("no")

    with pytest.raises(KeyError):
        run_in_transaction(engine, fails)

    def partial(session):
        session.add(User(name="bob"))
        with pytest.raises(exc.IntegrityError):
            with session.begin_nested():
                session.add(User(name="ada"))
        return "ok"

    assert run_in_transaction(engine, partial) == "ok"
    with Session(engine) as session:
        assert session.scalars(select(User.name).order_by(User.id)).all() == ["ada", "bob"]


def test_an_existing_gateway_can_be_bound(tmp_path):
    with Gateway(tmp_path / "own.db") as db:
        engine = engine_for(db)
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(User(name="ada"))
            session.commit()
        assert db.execute("SELECT name FROM users").scalar() == "ada"
        assert run_in_transaction(db, lambda s: s.scalar(select(User.name))) == "ada"
        engine.dispose()


def test_a_forked_child_gets_its_own_gateway(url):
    code = f"""
import os, sys
sys.path.insert(0, {os.getcwd()!r})
from sqlalchemy import create_engine, text
engine = create_engine({url!r})
with engine.begin() as c:
    c.execute(text("CREATE TABLE t (x)"))
pid = os.fork()
if pid == 0:
    with engine.begin() as c:
        c.execute(text("INSERT INTO t VALUES ('child')"))
    os._exit(0)
_, status = os.waitpid(pid, 0)
with engine.connect() as c:
    print(os.waitstatus_to_exitcode(status), c.execute(text("SELECT x FROM t")).scalar())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["0", "child"], out.stderr


def test_a_session_past_the_hold_limit_is_rolled_back_and_told(tmp_path):
    from sqlite_gateway import WriteBlockExpired

    engine = create_engine(f"sqlite+gateway:///{tmp_path / 'slow.db'}?hold_limit=0.3")
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add(User(name="too slow"))
            session.flush()
            block = session.connection().connection.dbapi_connection._block.handle
            deadline = time.monotonic() + 30
            while block.held and time.monotonic() < deadline:
                time.sleep(0.01)  # slow work with the writer held
            with pytest.raises(WriteBlockExpired):
                session.commit()
            session.rollback()
            session.add(User(name="next"))  # the session goes on
            session.commit()
        with Session(engine) as session:
            assert session.scalars(select(User.name)).all() == ["next"]
    finally:
        engine.dispose()
        registry.close_all()


def test_untyped_datetime_and_date_parameters_bind_as_sqlite3s(engine):
    when = datetime.datetime(2026, 12, 6, 5, 30, 1)
    with engine.connect() as conn:
        got = conn.execute(text("SELECT :when, :day"), {"when": when, "day": when.date()}).one()
    assert tuple(got) == ("2026-12-06 05:30:01", "2026-12-06")


def _twice(conn):
    conn.create_scalar_function("twice", lambda v: 2 * v, 1, deterministic=True)


def test_functions_reach_every_connection_through_connection_setup(tmp_path):
    engine = create_engine(f"sqlite+gateway:///{tmp_path / 'fn.db'}",
                           connect_args={"connection_setup": _twice})
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add_all([User(name="ada"), User(name="bob")])
            session.commit()
            # on a reader (a read before any write), then inside the write block
            assert session.scalar(select(sqlalchemy.func.twice(User.id)).where(
                User.name.regexp_match("^b"))) == 4
            session.add(User(name="cy"))
            session.flush()
            assert session.scalar(select(sqlalchemy.func.twice(sqlalchemy.func.count())
                                         ).select_from(User)) == 6
            session.commit()
    finally:
        engine.dispose()
        registry.close_all()


def test_orm_updates_and_deletes_on_tables_with_triggers_and_cascades(engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE audit (what TEXT)"))
        conn.execute(text("CREATE TRIGGER users_audit AFTER UPDATE ON users BEGIN "
                          "INSERT INTO audit VALUES ('u1'); INSERT INTO audit VALUES ('u2'); END"))
    with Session(engine) as session:
        session.add(User(name="ada", posts=[Post(title="a"), Post(title="b")]))
        session.commit()
        ada = session.scalars(select(User)).one()
        ada.name = "Ada"  # rowcount must be 1, not 3 (the trigger's rows are not counted)
        session.commit()
        for post in ada.posts:
            session.delete(post)
        session.delete(ada)
        session.commit()
        assert session.scalars(select(User)).all() == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit")).scalar() == 2
