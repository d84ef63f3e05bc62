"""Django on the gateway: ``"ENGINE": "sqlite_gateway.integrations.django"`` (imports Django).

::

    DATABASES = {
        "default": {
            "ENGINE": "sqlite_gateway.integrations.django",
            "NAME": BASE_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 10, "readers": 8},  # any gateway option
        }
    }

Outside ``atomic()`` each statement is one gateway call (reads on the readers);
an ``atomic()`` block holds the writer from its start and commits with the
batch it joins; nested blocks are savepoints. :func:`on_writer` runs a function
on the writer as one group-committed unit (the fastest way to write). See
docs/django.md for migrations, tests, long transactions and what differs from
the stock backend.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra's absence
    raise ImportError("sqlite_gateway.integrations.django needs Django: "
                      "pip install 'sqlite-gateway[django]'") from exc

from .helpers import on_writer

__all__ = ["on_writer"]
