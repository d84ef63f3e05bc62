"""Flask-SQLAlchemy on the gateway with only the URL changed, behind a live server."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

pytest.importorskip("flask_sqlalchemy")

from flask import Flask  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from sqlite_gateway.integrations import registry  # noqa: E402


class Base(DeclarativeBase):
    pass


def make_app(uri: str) -> tuple[Flask, SQLAlchemy]:
    """The Flask-SQLAlchemy quickstart's shape; the URI is the only change."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = uri
    db = SQLAlchemy(app, model_class=Base)

    class Page(db.Model):  # type: ignore[name-defined]
        id: Mapped[int] = mapped_column(primary_key=True)
        views: Mapped[int] = mapped_column(default=0)

    @app.post("/view/<int:page_id>")
    def view(page_id: int) -> dict[str, int]:
        page = db.session.get(Page, page_id)
        if page is None:
            page = Page(id=page_id)
            db.session.add(page)
            db.session.flush()
        page.views += 1
        db.session.commit()
        return {"views": page.views}

    @app.get("/pages")
    def pages() -> list[list[int]]:
        rows = db.session.execute(db.select(Page).order_by(Page.id)).scalars()
        return [[p.id, p.views] for p in rows]

    with app.app_context():
        db.create_all()
    return app, db


@pytest.fixture
def server(tmp_path):
    # begin=immediate: each request's read-modify-write holds the writer from its
    # first statement, so concurrent views are counted exactly.
    app, db = make_app(f"sqlite+gateway:///{tmp_path / 'app.db'}?begin=immediate")
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(30)
        httpd.server_close()
        with app.app_context():
            db.engine.dispose()
        registry.close_all()


def call(url: str, method: str = "GET") -> object:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_flask_sqlalchemy_serves_exact_counts_from_concurrent_requests(server):
    assert call(server + "/pages") == []  # an empty result set, through the ORM
    errors: list[BaseException] = []

    def client(page: int) -> None:
        try:
            for _ in range(10):
                call(f"{server}/view/{page}", "POST")
        except BaseException as error:  # reported below
            errors.append(error)

    call(server + "/view/1", "POST")
    call(server + "/view/2", "POST")
    threads = [threading.Thread(target=client, args=(1 + i % 2,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert call(server + "/pages") == [[1, 21], [2, 21]]
