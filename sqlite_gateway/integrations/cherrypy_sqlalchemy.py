"""A CherryPy tool that hands each handler a SQLAlchemy Session on the gateway
(imports cherrypy and sqlalchemy).

The well-known CherryPy SQLAlchemy recipe, on the gateway: the tool opens a
``Session`` when the request reaches its handler (``cherrypy.request.orm_session``),
commits it when the handler returns, before the response is written (so the
client hears success only after the COMMIT, and a failed commit is an error
answer), and rolls it back if the handler raises. Errors are answered as
JSON like :class:`~sqlite_gateway.integrations.cherrypy.GatewayTool` answers
them: a constraint violation (SQLAlchemy's ``IntegrityError``) is a 409,
``Overloaded``/``GatewayClosed`` a 503, ``RequestTimeout`` a 504::

    import cherrypy
    from sqlalchemy import create_engine
    from sqlite_gateway.integrations.cherrypy_sqlalchemy import SessionTool

    engine = create_engine("sqlite+gateway:///app.db?begin=immediate")
    cherrypy.tools.orm = SessionTool(engine)

    class Root:
        @cherrypy.expose
        @cherrypy.tools.orm()
        def like(self, post_id):
            post = cherrypy.request.orm_session.get(Post, int(post_id))
            post.likes += 1          # committed when the handler returns
            return str(post.likes)

Without an engine, the tool uses the gateway of the engine's
:class:`~sqlite_gateway.integrations.cherrypy.GatewayPlugin` (``install()``),
so the session and ``cherrypy.request.db`` share one gateway.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

import cherrypy
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..errors import GatewayClosed
from ..gateway import Gateway
from .cherrypy import CHANNEL, answer_json
from .sqlalchemy import engine_for

__all__ = ["SessionTool"]

_ATTR = "orm_session"


class SessionTool(cherrypy.Tool):
    """Sets ``cherrypy.request.orm_session`` for the handler; commits or rolls back.

    Args:
        bind: a ``sqlite+gateway`` Engine, or None: the gateway published by
            the GatewayPlugin (an engine is made for it once, with ``begin``).
        begin: the begin mode for that engine (``"deferred"`` or
            ``"immediate"``); with ``bind`` given, the URL says it.
        **session_kwargs: passed to ``Session`` (e.g. ``expire_on_commit=False``).
    """

    def __init__(self, bind: Engine | None = None, *, begin: str = "deferred",
                 **session_kwargs: Any) -> None:
        self.bind = bind
        self.begin = begin
        self.session_kwargs = session_kwargs
        self._engines: weakref.WeakKeyDictionary[Gateway, Engine] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        super().__init__("on_start_resource", self._open, priority=20)

    def _setup(self) -> None:
        super()._setup()
        hooks = cherrypy.serving.request.hooks
        hooks.attach("before_finalize", self._commit, priority=10)
        hooks.attach("on_end_resource", self._close, priority=80)
        cherrypy.serving.request.error_response = _json_error_response

    def _engine(self) -> Engine:
        if self.bind is not None:
            return self.bind
        dbs = [db for db in cherrypy.engine.publish(CHANNEL) if db is not None]
        if not dbs or not isinstance(dbs[0], Gateway):
            raise GatewayClosed("the database is not available")
        with self._lock:
            engine = self._engines.get(dbs[0])
            if engine is None:
                engine = self._engines[dbs[0]] = engine_for(
                    dbs[0], connect_args={"begin": self.begin})
        return engine

    def _open(self) -> None:
        setattr(cherrypy.serving.request, _ATTR,
                Session(self._engine(), **self.session_kwargs))

    def _commit(self) -> None:
        session = getattr(cherrypy.serving.request, _ATTR, None)
        if session is not None:
            session.commit()  # an error here becomes the answer: nothing was kept

    def _close(self) -> None:
        request = cherrypy.serving.request
        session = getattr(request, _ATTR, None)
        if session is not None:
            setattr(request, _ATTR, None)
            session.close()  # rolls back whatever was not committed


def _json_error_response() -> None:
    """The JSON error answer, with SQLAlchemy's wrapping taken off first."""
    exc = sys.exc_info()[1]
    assert exc is not None
    cause: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        cause = exc.orig.__cause__ or exc.orig  # the apsw error under the DB-API one
    answer_json(exc, cause)
