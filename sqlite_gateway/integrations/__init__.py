"""Framework integrations: one module per framework, beside what they share.

::

    integrations/
      http.py       gateway errors -> HTTP answers (status, JSON body, headers)
      settings.py   a framework's config keys -> validated Gateway options
      cherrypy.py   GatewayPlugin (engine) + GatewayTool (request.db, errors)
      flask.py      FlaskGateway: init_app, SQLITE_GATEWAY_* config, error handlers
      asyncio.py    AsyncGateway: await-able calls over the same worker
      asyncblock.py AsyncGateway.writer(): write blocks for ``async with``

    ORMs, through a DB-API 2.0 module shaped like ``sqlite3``:
      dbapi.py          connect(), Connection: per statement, a reader, the
                        connection's write block, or a transaction fn's handle
      dbapi_cursor.py   its Cursor
      dbapi_errors.py   PEP 249's errors, mapped from apsw's as sqlite3 maps them
      txcontrol.py      BEGIN/COMMIT/SAVEPOINT... statements -> write block, savepoints
      registry.py       one gateway per file per process, shared by connections
      sqlalchemy.py     the sqlite+gateway dialect, engine_for, run_in_transaction
      cherrypy_sqlalchemy.py  SessionTool: a SQLAlchemy Session per request
      peewee.py         GatewayDatabase for peewee models
      django/           the Django database backend (ENGINE
                        "sqlite_gateway.integrations.django"), on_writer

``http``, ``settings`` and the DB-API modules import no framework. Each framework module imports
its framework when it is imported itself, never from here, so ``import
sqlite_gateway`` (and this package) works with no framework installed. The
next integration goes here as ``<framework>.py``: it reads its config through
:func:`~sqlite_gateway.integrations.settings.parse_settings` and answers
errors through :func:`~sqlite_gateway.integrations.http.error_answer`.
"""
