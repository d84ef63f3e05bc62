"""The CherryPy session tool: a SQLAlchemy Session per request on the gateway, live."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

cherrypy = pytest.importorskip("cherrypy")
pytest.importorskip("sqlalchemy")

from sqlalchemy import String, create_engine, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

from sqlite_gateway.integrations import registry  # noqa: E402
from sqlite_gateway.integrations.cherrypy import install  # noqa: E402
from sqlite_gateway.integrations.cherrypy_sqlalchemy import SessionTool  # noqa: E402


class Base(DeclarativeBase):
    pass


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50), unique=True)
    likes: Mapped[int] = mapped_column(default=0)


class Root:
    @cherrypy.expose
    def add(self, title):
        session = cherrypy.request.orm_session
        session.add(Post(title=title))
        return "added"  # committed by the tool when this returns

    @cherrypy.expose
    def add_then_fail(self, title):
        cherrypy.request.orm_session.add(Post(title=title))
        cherrypy.request.orm_session.flush()
        raise ValueError("secret internals")

    @cherrypy.expose
    def like(self, post_id):
        post = cherrypy.request.orm_session.get(Post, int(post_id))
        post.likes += 1
        return str(post.likes)

    @cherrypy.expose
    def count(self):
        return str(len(cherrypy.request.orm_session.scalars(select(Post)).all()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


@pytest.fixture(params=["engine", "plugin"])
def live(request, tmp_path):
    """A live server on loopback; the tool bound to an engine, or to the plugin's gateway."""
    path = str(tmp_path / "app.db")
    engine = create_engine(f"sqlite+gateway:///{path}?begin=immediate")
    Base.metadata.create_all(engine)
    plugin = None
    if request.param == "engine":
        cherrypy.tools.orm_test = SessionTool(engine)
    else:
        plugin = install(cherrypy.engine, path=path, tool_name="db_test")
        cherrypy.tools.orm_test = SessionTool(begin="immediate")
    port = _free_port()
    cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": port,
                            "log.screen": False, "engine.autoreload.on": False,
                            "checker.on": False, "server.thread_pool": 8})
    cherrypy.tree.mount(Root(), "/", {"/": {"tools.orm_test.on": True}})
    cherrypy.engine.start()
    try:
        yield f"http://127.0.0.1:{port}", engine
    finally:
        cherrypy.engine.stop()
        if plugin is not None:
            plugin.unsubscribe()
            del cherrypy.tools.db_test
        cherrypy.tree.apps.clear()
        cherrypy.server.httpserver = None
        del cherrypy.tools.orm_test
        engine.dispose()
        registry.close_all()


def titles(engine):
    with Session(engine) as session:
        return session.scalars(select(Post.title).order_by(Post.id)).all()


def test_the_session_is_committed_when_the_handler_returns(live):
    url, engine = live
    assert _get(url + "/add?title=first")[::2] == (200, b"added")
    assert titles(engine) == ["first"]  # committed before the answer came


def test_a_handler_error_rolls_back_and_answers_json(live):
    url, engine = live
    code, headers, body = _get(url + "/add_then_fail?title=lost")
    assert (code, headers["Content-Type"]) == (500, "application/json")
    assert b"secret internals" not in body
    assert titles(engine) == []
    assert _get(url + "/count")[::2] == (200, b"0")  # the server goes on


def test_a_constraint_violation_at_commit_is_a_409(live):
    url, engine = live
    _get(url + "/add?title=twice")
    code, _, body = _get(url + "/add?title=twice")
    assert code == 409 and json.loads(body)["status"] == 409
    assert titles(engine) == ["twice"]


def test_concurrent_requests_read_modify_write_exactly(live):
    url, engine = live
    _get(url + "/add?title=popular")
    errors: list[object] = []

    def client():
        for _ in range(10):
            code, _, body = _get(url + "/like?post_id=1")
            if code != 200:
                errors.append((code, body))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with Session(engine) as session:
        assert session.get(Post, 1).likes == 40
