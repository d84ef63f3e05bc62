"""sqlite_gateway: one writer thread, group commit, durable answers.

The whole public surface::

    from sqlite_gateway import (Gateway, Result, GatewayError, GatewayClosed,
                                Overloaded, RequestTimeout)
"""

from __future__ import annotations

import logging

from .errors import GatewayClosed, GatewayError, Overloaded, RequestTimeout
from .failures import PostFailure
from .gateway import Gateway
from .result import Result

__all__ = ["Gateway", "Result", "GatewayError", "GatewayClosed", "Overloaded", "RequestTimeout",
           "PostFailure"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
