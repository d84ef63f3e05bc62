"""A framework that is not installed: an import error that says which extra installs it.

Each integration imports its framework at its top, inside :func:`needs_extra`::

    with needs_extra("flask", "sqlite_gateway.integrations.flask"):
        import flask
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def needs_extra(extra: str, module: str) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` raised inside into one that names ``pip install``.

    The new error keeps the class and the missing module's ``name`` (code that
    checks ``exc.name`` still can), and chains the original.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{module} needs {exc.name or 'a module that is not installed'}: install it with "
            f"pip install 'sqlite-gateway[{extra}]'", name=exc.name) from exc
