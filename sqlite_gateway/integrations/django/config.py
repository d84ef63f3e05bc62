"""A Django ``DATABASES`` entry -> the gateway's path, options and connection set-up.

Checked when the backend is first used (Django makes the connection wrapper), so
a setting the backend cannot honour fails at start-up with one message that says
what to change, before anything is opened. Imports no framework.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..settings import OPTIONS as GATEWAY_OPTIONS
from ..settings import parse_settings

__all__ = ["BackendConfig", "ConfigError", "read_config"]

# What to do instead of an init_command PRAGMA, for the settings the gateway owns.
_INSTEAD = {
    "synchronous": 'set OPTIONS["synchronous"] ("FULL", "NORMAL", ...)',
    "busy_timeout": 'set OPTIONS["busy_timeout"] (seconds)',
    "wal_autocheckpoint": 'set OPTIONS["autocheckpoint"] (pages)',
    "journal_mode": "remove it: the gateway always uses WAL",
    "foreign_keys": "remove it: foreign keys are always on, as Django expects",
}
_PRAGMA = re.compile(r"\s*PRAGMA\s+(?:\w+\.)?(\w+)", re.IGNORECASE)
_MEMORY = re.compile(r"(?:^|[?&])mode=memory(?:&|$)")
# sqlite3.connect() arguments that the gateway decides for itself.
_SQLITE3_ARGS = frozenset({"detect_types", "isolation_level", "check_same_thread", "factory",
                           "cached_statements", "uri", "autocommit"})
TRANSACTION_MODES = (None, "IMMEDIATE", "EXCLUSIVE")


_composed: dict[tuple[Any, Any], Callable[[apsw.Connection], None]] = {}
_composed_lock = threading.Lock()


class ConfigError(ValueError):
    """A DATABASES setting the backend cannot honour (the message says what to change)."""


@dataclass(frozen=True)
class BackendConfig:
    """What a DATABASES entry asks of the gateway.

    Attributes:
        path: the database file.
        options: Gateway options (checked), but for ``connection_setup``.
        user_setup: the ``connection_setup`` option given, or None.
    """

    path: str
    options: dict[str, Any] = field(default_factory=dict)
    user_setup: Callable[[apsw.Connection], object] | None = None

    def setup(self, functions: Callable[[apsw.Connection], None]
              ) -> Callable[[apsw.Connection], None]:
        """The connection set-up hook: ``functions(conn)``, then the user's own.

        The same object for the same pair, every time: a gateway already open
        checks that each connection asks for the hook it runs."""
        user_setup = self.user_setup
        if user_setup is None:
            return functions
        key = (functions, user_setup)
        with _composed_lock:
            setup = _composed.get(key)
            if setup is None:
                def setup(conn: apsw.Connection) -> None:
                    functions(conn)
                    user_setup(conn)
                _composed[key] = setup
        return setup


def read_config(alias: str, settings: Mapping[str, Any]) -> BackendConfig:
    """Check one ``DATABASES`` entry; return the gateway's configuration.

    Raises:
        ConfigError: the first setting the backend cannot honour, named as
            ``DATABASES[alias][...]`` with what to change.
    """
    where = f"DATABASES[{alias!r}]"
    name = settings.get("NAME")
    if not name:
        raise ConfigError(f"{where}['NAME'] must name the database file")
    name = str(name)
    if name == ":memory:" or _MEMORY.search(name) or name.lower().startswith("file:"):
        raise ConfigError(
            f"{where}['NAME'] is {name!r}: the gateway needs a database file (in-memory "
            "databases are private to one connection, and WAL needs a file); give a path, "
            "e.g. BASE_DIR / 'db.sqlite3'")
    options = dict(settings.get("OPTIONS") or {})
    given = options.pop("transaction_mode", None)
    mode = given.upper() if isinstance(given, str) else given
    if mode not in (*TRANSACTION_MODES, "DEFERRED"):  # Django's own message, as stock
        raise ConfigError(
            f"settings.DATABASES[{alias!r}]['OPTIONS']['transaction_mode'] is improperly "
            f"configured to '{given}'. Use one of 'DEFERRED', 'EXCLUSIVE', 'IMMEDIATE', or "
            "None.")
    if mode not in TRANSACTION_MODES:
        raise ConfigError(
            f"{where}['OPTIONS']['transaction_mode'] is {given!r}: "
            "on the gateway every atomic() block holds the writer from its start (as "
            "IMMEDIATE does; in WAL mode EXCLUSIVE is the same), so reads and writes in it "
            "are exact; remove the option, or set it to 'IMMEDIATE'")
    _refuse_init_command(where, options.pop("init_command", "") or "")
    stray = sorted(set(options) & _SQLITE3_ARGS)
    if stray:
        raise ConfigError(
            f"{where}['OPTIONS'] sets {', '.join(stray)}: the gateway opens and shares its "
            "connections itself; remove them (gateway options go in OPTIONS: timeout, "
            "readers, synchronous, busy_timeout, ...)")
    unknown = sorted(set(options) - set(GATEWAY_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{where}['OPTIONS'] has {', '.join(map(repr, unknown))}, which is no gateway "
            f"option; known: {', '.join(GATEWAY_OPTIONS)}, init_command, transaction_mode")
    try:
        checked = parse_settings(options, source=f"{where}['OPTIONS'][{{!r}}]")
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    gateway_options = dict(checked.options)
    user_setup = gateway_options.pop("connection_setup", None)
    return BackendConfig(name, gateway_options, user_setup)


def _refuse_init_command(where: str, init_command: str) -> None:
    """ConfigError for an init_command with any statement, saying what to do instead."""
    for statement in init_command.split(";"):
        if not statement.strip():
            continue
        match = _PRAGMA.match(statement)
        pragma = match.group(1).lower() if match else None
        what = f"PRAGMA {pragma}" if pragma else repr(statement.strip())
        hint = _INSTEAD.get(pragma or "", "tune the writer once with "
                            "connection.gateway().run_exclusive(fn), and register SQL "
                            "functions with OPTIONS['connection_setup']")
        raise ConfigError(
            f"{where}['OPTIONS']['init_command'] runs {what}: the gateway's connections are "
            f"shared by every request and configured by the gateway itself; {hint}")
