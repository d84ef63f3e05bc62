"""Flask integration: the gateway as a Flask extension (imports flask).

::

    from flask import Flask
    from sqlite_gateway.integrations.flask import FlaskGateway

    gateway = FlaskGateway()

    def create_app():
        app = Flask(__name__)
        app.config["SQLITE_GATEWAY_PATH"] = "app.db"
        gateway.init_app(app)
        return app

    # in a view, or in any thread of the process:
    gateway.db.transaction(fn, ...)

- Config: ``SQLITE_GATEWAY_PATH`` and ``SQLITE_GATEWAY_<OPTION>`` for every
  Gateway option (``QUEUE_SIZE``, ``TIMEOUT``, ``SYNCHRONOUS``, ``READERS``,
  ...), read and checked at ``init_app`` by
  :mod:`sqlite_gateway.integrations.settings`, as in every integration.
- One gateway per app per process, opened on first use (so a server that
  forks its workers after loading the app opens one in each worker, never in
  the parent), and drained and closed when the process exits (an ``atexit``
  hook: Flask has no shutdown signal of its own). A gateway found after a
  fork, opened by the parent, is left alone and a new one is opened.
- Errors a view does not catch that come from the gateway or SQLite are
  answered as JSON by handlers registered with ``app.register_error_handler``:
  ``Overloaded`` and ``GatewayClosed`` -> 503 with Retry-After,
  ``RequestTimeout`` -> 504, ``apsw.ConstraintError`` -> 409, any other -> 500
  (its traceback goes to ``app.logger``, never to the client). The app's own
  errors are left to Flask.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable

import apsw

from ..database import Database
from ..errors import GatewayError
from ..gateway import Gateway
from .extras import needs_extra
from .http import error_answer
from .settings import DatabaseFactory, GatewaySettings, check_factory, parse_settings

with needs_extra("flask", __name__):
    import flask

__all__ = ["CONFIG_PREFIX", "EXTENSION_KEY", "FlaskGateway"]

CONFIG_PREFIX = "SQLITE_GATEWAY_"
EXTENSION_KEY = "sqlite_gateway"
"""``app.extensions[EXTENSION_KEY]`` is the :class:`FlaskGateway` of that app."""

_EXIT_TIMEOUT = 30.0  # seconds the exit hook waits for one gateway to drain


class _AppState:
    """What one app's gateway needs: its settings and, once opened, the gateway."""

    __slots__ = ("settings", "db", "pid", "inherited")

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.db: Database | None = None
        self.pid = 0  # the process that opened db
        # Gateways opened before a fork, in the parent: never touched here
        # (their worker thread does not exist in this process), only kept.
        self.inherited: list[Database] = []


class FlaskGateway:
    """A Flask extension that owns one :class:`Gateway` per app per process.

    Args:
        app: an app to initialise now (else call :meth:`init_app`).
        setup: called with each newly opened gateway (e.g. to create the
            schema); if it raises, that gateway is closed and the error
            reaches the caller that opened it.
        factory: makes the database from the path and options (see
            :data:`~sqlite_gateway.integrations.settings.DatabaseFactory`); a
            :class:`Gateway` unless told (code, not config: a benchmark may pass
            another class with the same calls).

    Thread-safe: views, background threads and the exit hook may all use it.
    """

    def __init__(self, app: flask.Flask | None = None, *,
                 setup: Callable[[Database], object] | None = None,
                 factory: DatabaseFactory = Gateway) -> None:
        self.setup = setup
        self.factory = check_factory(factory)
        # _lock is held while opening or closing a gateway of any app.
        self._lock = threading.Lock()
        self._apps: weakref.WeakKeyDictionary[flask.Flask, _AppState] = (
            weakref.WeakKeyDictionary())
        self._only_app: weakref.ReferenceType[flask.Flask] | None = None
        self._exit_hook = False
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Read and check the app's ``SQLITE_GATEWAY_*`` config, register the
        error handlers, and publish this extension as ``app.extensions["sqlite_gateway"]``.

        Opens nothing: the gateway opens on first use in each process.

        Raises:
            ValueError, TypeError: an unknown ``SQLITE_GATEWAY_*`` key, a
                missing ``SQLITE_GATEWAY_PATH``, or a bad value (named).
        """
        settings = parse_settings(app.config, prefix=CONFIG_PREFIX, upper=True)
        if not settings.path:
            raise ValueError(f"set {CONFIG_PREFIX}PATH (the database file) in app.config "
                             "before init_app()")
        with self._lock:
            self._apps[app] = _AppState(settings)
            self._only_app = weakref.ref(app) if len(self._apps) == 1 else None
        app.extensions[EXTENSION_KEY] = self
        app.register_error_handler(GatewayError, self._answer_error)
        app.register_error_handler(apsw.Error, self._answer_error)

    # -- the gateway --------------------------------------------------------------

    @property
    def db(self) -> Database:
        """The current app's gateway, opened on first use in this process.

        Inside a request or app context, the current app's; elsewhere (a
        background thread), the one app this extension was initialised with.

        Raises:
            RuntimeError: outside an app context with several apps.
            apsw.Error: the file could not be opened (tried again next time).
        """
        return self.get(self._current_app())

    def get(self, app: flask.Flask) -> Database:
        """``app``'s gateway, opened on first use in this process; thread-safe."""
        state = self._state(app)
        db, pid = state.db, state.pid
        if db is not None and pid == os.getpid():
            return db
        with self._lock:
            if state.db is not None and state.pid != os.getpid():
                state.inherited.append(state.db)  # the parent's: see _AppState
                state.db = None
            if state.db is None:
                state.db = state.settings.open(self.setup, self.factory)
                state.pid = os.getpid()
                if not self._exit_hook:
                    atexit.register(self._close_all_at_exit)
                    self._exit_hook = True
            return state.db

    def close(self, app: flask.Flask | None = None, timeout: float | None = None) -> None:
        """Drain and close ``app``'s gateway (default: the current app's) in this process.

        Everything already accepted is committed first. The next use opens a
        new gateway. Idempotent.
        """
        state = self._state(app or self._current_app())
        with self._lock:
            db, state.db = state.db, None
            mine = state.pid == os.getpid()
        if db is not None and mine:
            db.close(timeout)

    def _close_all_at_exit(self) -> None:
        """At interpreter exit: drain every gateway this process opened."""
        for app in list(self._apps.keys()):
            try:
                self.close(app, timeout=_EXIT_TIMEOUT)
            except Exception:  # one app's failure must not keep the others open
                app.logger.exception("sqlite_gateway: closing the gateway at exit failed")

    def _state(self, app: flask.Flask) -> _AppState:
        state = self._apps.get(app)
        if state is None:
            raise RuntimeError("FlaskGateway.init_app(app) was not called for this app")
        return state

    def _current_app(self) -> flask.Flask:
        if flask.has_app_context():
            app: flask.Flask = flask.current_app._get_current_object()  # type: ignore[attr-defined]
            return app
        only = self._only_app() if self._only_app is not None else None
        if only is None:
            raise RuntimeError("no app context, and this FlaskGateway serves several apps: "
                               "use gateway.get(app), or push app.app_context()")
        return only

    # -- errors ---------------------------------------------------------------------

    def _answer_error(self, exc: Exception) -> flask.Response:
        """The registered error handler: the shared mapping, as a JSON response."""
        answer = error_answer(exc)
        if answer.logged:
            flask.current_app.logger.error("sqlite_gateway: unhandled %s in %s",
                                           type(exc).__name__, flask.request.path,
                                           exc_info=exc)
        return flask.current_app.response_class(
            answer.json_body(), status=answer.status, headers=answer.headers,
            mimetype="application/json")
