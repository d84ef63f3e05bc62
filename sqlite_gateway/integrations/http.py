"""Gateway errors as HTTP answers, written once for every web framework.

:func:`error_answer` maps an exception a handler did not catch to a status,
a message safe to show a client, and headers::

    Overloaded, GatewayClosed   503, with Retry-After (retrying later is safe)
    RequestTimeout              504 (the message says whether it may still commit)
    apsw.ConstraintError        409
    anything else               500; the message hides the details (log them)

Imports no web framework; each integration turns an :class:`ErrorAnswer`
into its own response object.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import apsw

from ..errors import GatewayClosed, Overloaded, RequestTimeout

RETRY_AFTER_S = 1
"""Seconds a 503 tells the client to wait before retrying."""

INTERNAL_MESSAGE = "internal error (logged on the server)"


class ErrorAnswer(NamedTuple):
    """What to answer for an error: the integration renders it."""

    status: int
    message: str
    headers: dict[str, str]

    @property
    def logged(self) -> bool:
        """True when the server should log the error with its traceback (a 500)."""
        return self.status == 500

    def json_body(self) -> bytes:
        """``{"error": message, "status": status}`` as UTF-8 bytes, unpadded."""
        return json.dumps({"error": self.message, "status": self.status}).encode()


def error_answer(exc: BaseException) -> ErrorAnswer:
    """The HTTP answer for ``exc``; never exposes the details of an unexpected error."""
    if isinstance(exc, (Overloaded, GatewayClosed)):
        return ErrorAnswer(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, RequestTimeout):
        return ErrorAnswer(504, str(exc), {})
    if isinstance(exc, apsw.ConstraintError):
        return ErrorAnswer(409, f"conflict: {exc}", {})
    return ErrorAnswer(500, INTERNAL_MESSAGE, {})
