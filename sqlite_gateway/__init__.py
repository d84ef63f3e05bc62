"""sqlite_gateway: one writer thread, group commit, durable answers.

The whole public surface::

    from sqlite_gateway import (
        Gateway, Options, Database, State,          # the gateway, its options, its calls
        Result, Connection, PostFailure,            # what calls give back or hand to fn
        WriteBlock,                                 # what db.writer() gives
        GatewayError, GatewayClosed, Overloaded,    # the errors (see sqlite_gateway.errors)
        RequestTimeout, TransactionControlError,
        ConnectionSettingError, NestedCallError, WriteBlockExpired)

Importing it imports apsw and no web framework (those are in
``sqlite_gateway.integrations``, each imported on its own).
"""

from __future__ import annotations

import logging

from .connection import Connection
from .database import Database
from .errors import (ConnectionSettingError, GatewayClosed, GatewayError, NestedCallError,
                     Overloaded, RequestTimeout, TransactionControlError, WriteBlockExpired)
from .failures import PostFailure
from .gateway import Gateway
from .lifecycle import State
from .options import Options
from .result import Result
from .writeblock import WriteBlock

__all__ = [
    "Gateway", "Options", "Database", "State",
    "Result", "Connection", "PostFailure", "WriteBlock",
    "GatewayError", "GatewayClosed", "Overloaded", "RequestTimeout",
    "TransactionControlError", "ConnectionSettingError", "NestedCallError", "WriteBlockExpired",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
