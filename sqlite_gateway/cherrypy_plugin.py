"""Old import path of the CherryPy integration, kept for one release.

The integration now lives in :mod:`sqlite_gateway.integrations.cherrypy`
(every framework integration sits in ``sqlite_gateway.integrations``). This
module re-exports its names so that existing ``from
sqlite_gateway.cherrypy_plugin import install`` lines keep working; it will be
removed in the release after next. Importing it imports cherrypy.
"""

from __future__ import annotations

from .integrations.cherrypy import (
    CHANNEL,
    RETRY_AFTER_S,
    GatewayPlugin,
    GatewayTool,
    install,
    json_error_response,
)

__all__ = ["CHANNEL", "RETRY_AFTER_S", "GatewayPlugin", "GatewayTool", "install",
           "json_error_response"]
