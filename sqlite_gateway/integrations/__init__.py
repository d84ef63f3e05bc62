"""Framework integrations: one module per framework, beside what they share.

::

    integrations/
      http.py       gateway errors -> HTTP answers (status, JSON body, headers)
      settings.py   a framework's config keys -> validated Gateway options
      cherrypy.py   GatewayPlugin (engine) + GatewayTool (request.db, errors)
      flask.py      FlaskGateway: init_app, SQLITE_GATEWAY_* config, error handlers
      asyncio.py    AsyncGateway: await-able calls over the same worker

``http`` and ``settings`` import no framework. Each framework module imports
its framework when it is imported itself, never from here, so ``import
sqlite_gateway`` (and this package) works with no framework installed. The
next integration goes here as ``<framework>.py``: it reads its config through
:func:`~sqlite_gateway.integrations.settings.parse_settings` and answers
errors through :func:`~sqlite_gateway.integrations.http.error_answer`.
"""
