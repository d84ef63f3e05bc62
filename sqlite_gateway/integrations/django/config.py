"""A Django ``DATABASES`` entry -> the gateway's path, options and connection set-up.

Checked when the backend is first used (Django makes the connection wrapper), so
a setting the backend cannot honour fails at start-up with one message that says
what to change, before anything is opened. Imports no framework.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..settings import OPTIONS as GATEWAY_OPTIONS
from ..settings import parse_settings

__all__ = ["BackendConfig", "ConfigError", "read_config"]

# PRAGMAs an init_command may set: they tune each connection the same way, so
# they run on every connection the gateway opens (writer and readers).
TUNING_PRAGMAS = frozenset({"cache_size", "cache_spill", "mmap_size", "temp_store", "threads",
                            "automatic_index", "analysis_limit", "optimize"})
# The rest are the gateway's own (with the option that sets them) or unsafe on a
# connection every request shares.
_OPTION_FOR = {
    "synchronous": 'set it with OPTIONS["synchronous"] ("FULL", "NORMAL", ...)',
    "busy_timeout": 'set it with OPTIONS["busy_timeout"] (seconds)',
    "wal_autocheckpoint": 'set it with OPTIONS["autocheckpoint"] (pages)',
    "journal_mode": "remove it: the gateway always uses WAL",
    "foreign_keys": "remove it: foreign keys are always on, as Django expects",
}
_PRAGMA = re.compile(r"\s*PRAGMA\s+(?:\w+\.)?(\w+)\s*(?:=\s*(.+?)|\((.+?)\))?\s*\Z",
                     re.IGNORECASE | re.DOTALL)
_MEMORY = re.compile(r"(?:^|[?&])mode=memory(?:&|$)")
# sqlite3.connect() arguments that the gateway decides for itself.
_SQLITE3_ARGS = frozenset({"detect_types", "isolation_level", "check_same_thread", "factory",
                           "cached_statements", "uri", "autocommit"})
TRANSACTION_MODES = (None, "IMMEDIATE", "EXCLUSIVE")


class ConfigError(ValueError):
    """A DATABASES setting the backend cannot honour (the message says what to change)."""


@dataclass(frozen=True)
class BackendConfig:
    """What a DATABASES entry asks of the gateway.

    Attributes:
        path: the database file.
        options: Gateway options (checked).
        pragmas: the init_command's PRAGMAs, run on every connection.
    """

    path: str
    options: dict[str, Any] = field(default_factory=dict)
    pragmas: tuple[str, ...] = ()

    def setup(self, functions: Callable[[apsw.Connection], None]
              ) -> Callable[[apsw.Connection], None]:
        """The connection set-up hook: ``functions(conn)``, then the PRAGMAs."""
        pragmas = self.pragmas

        def setup(conn: apsw.Connection) -> None:
            # On the readers too, so that reading the PRAGMA tells what Django expects.
            conn.execute("PRAGMA foreign_keys = ON")
            functions(conn)
            for pragma in pragmas:
                conn.execute(pragma)
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
    pragmas = _init_pragmas(where, options.pop("init_command", "") or "")
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
    return BackendConfig(name, checked.options, pragmas)


def _init_pragmas(where: str, init_command: str) -> tuple[str, ...]:
    """The init_command's statements, each a tuning PRAGMA, or ConfigError."""
    pragmas = []
    for statement in init_command.split(";"):
        if not statement.strip():
            continue
        match = _PRAGMA.match(statement)
        pragma = match.group(1).lower() if match else None
        if pragma in TUNING_PRAGMAS:
            pragmas.append(statement.strip())
            continue
        what = f"PRAGMA {pragma}" if pragma else repr(statement.strip())
        hint = _OPTION_FOR.get(pragma or "", "it would change a connection every request "
                               "shares, or the file")
        raise ConfigError(
            f"{where}['OPTIONS']['init_command'] runs {what}, which the gateway cannot run on "
            f"its shared connections: {hint}. init_command may hold only these PRAGMAs, run "
            f"on every connection: {', '.join(sorted(TUNING_PRAGMAS))}")
    return tuple(pragmas)
