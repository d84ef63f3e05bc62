"""The database backend Django loads for ``ENGINE = "sqlite_gateway.integrations.django"``.

Django's own sqlite3 backend (its SQL, introspection, schema editor, features),
with the gateway's DB-API module (:mod:`sqlite_gateway.integrations.dbapi`) in
place of ``sqlite3`` and these differences:

- every connection of a process to one file shares that file's gateway (one
  writer, group commit), opened on first use in each process (after a fork);
- Django's SQL functions are registered by the gateway's connection set-up
  hook, on the writer and on every reader;
- ``atomic()`` sends ``BEGIN IMMEDIATE``: the block holds the writer from its
  start (a write block), so what it reads cannot change before it writes;
- the schema editor holds the writer alone with foreign keys off for its length
  (:mod:`.exclusive`), where stock SQLite turns them off on its own connection.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any

import apsw
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.validation import BaseDatabaseValidation
from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.sqlite3 import features as sqlite3_features
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
from django.utils.asyncio import async_unsafe

from ...gateway import Gateway
from ...options import Options
from .. import dbapi as Database  # noqa: N812 (Django's name for the driver module)
from ..dbapi_errors import mapped
from .config import BackendConfig, ConfigError, read_config
from .creation import DatabaseCreation
from .exclusive import ExclusiveSession
from .functions import register as register_functions

__all__ = ["DatabaseWrapper"]

# As Django's sqlite3 backend registers on sqlite3 (dates and datetimes are the
# DB-API module's defaults already).
Database.register_adapter(decimal.Decimal, str)


class DatabaseFeatures(sqlite3_features.DatabaseFeatures):
    """Django's sqlite3 features, judged by the SQLite the gateway runs (apsw's)."""

    can_alter_table_drop_column = Database.sqlite_version_info >= (3, 35, 5)


class CursorWrapper(Database.Cursor):
    """Django's "format"/"pyformat" parameters -> qmark/named, as Django's sqlite3
    cursor does; during a schema change, statements go to the exclusive session."""

    def __init__(self, connection: Database.Connection, wrapper: DatabaseWrapper) -> None:
        super().__init__(connection)
        self._wrapper = wrapper

    def execute(self, query: str, params: Any = None) -> CursorWrapper:
        if params is not None:
            names = list(params) if isinstance(params, Mapping) else None
            query = convert_query(query, names)
        session = self._wrapper.session
        if session is not None:
            self._run_in(session, query, params, False)
            return self
        super().execute(query, params)
        return self

    def executemany(self, query: str, param_list: Any) -> CursorWrapper:
        param_list = list(param_list)
        names = list(param_list[0]) if param_list and isinstance(param_list[0], Mapping) else None
        query = convert_query(query, names)
        session = self._wrapper.session
        if session is not None:
            self._run_in(session, query, param_list, True)
            return self
        super().executemany(query, param_list)
        return self

    def _run_in(self, session: ExclusiveSession, query: str, params: Any, many: bool) -> None:
        try:
            if many:
                result = session.execute(query, [Database._adapt(p) for p in params], True)
            else:
                result = session.execute(query, Database._adapt(params))
        except apsw.Error as exc:
            raise mapped(exc) from exc
        self._set(result, query)


class DatabaseValidation(BaseDatabaseValidation):
    """``manage.py check --database <alias>`` (and ``migrate``) warn of ATOMIC_REQUESTS."""

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = super().check(**kwargs)
        if self.connection.settings_dict.get("ATOMIC_REQUESTS"):
            limit = self.connection.config().options.get("hold_limit", Options().hold_limit)
            messages.append(checks.Warning(
                f"ATOMIC_REQUESTS is on for database {self.connection.alias!r}: each request "
                "holds the single writer for its whole length, so requests run one at a time, "
                f"and one that holds it past hold_limit ({limit:g} s) is rolled back and fails "
                "with WriteBlockExpired.",
                hint="Wrap only the writes in transaction.atomic(), or use on_writer; raise "
                     "OPTIONS['hold_limit'] if requests must stay atomic.",
                obj=self.connection.alias, id="sqlite_gateway.W001"))
        return messages


def convert_query(query: str, param_names: list[str] | None) -> str:
    """Django's "format" style to qmark, or "pyformat" to named (as Django's sqlite3)."""
    if param_names is None:
        qmark: str = FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")
        return qmark
    converted: str = query % {name: f":{name}" for name in param_names}
    return converted


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    """Django's sqlite3 DatabaseWrapper on the gateway. One per thread, as every backend."""

    display_name = "SQLite"  # (Django's messages name the database by it)
    Database = Database
    creation_class = DatabaseCreation
    validation_class = DatabaseValidation
    features_class = DatabaseFeatures

    def __init__(self, settings_dict: dict[str, Any], alias: str = "default") -> None:
        super().__init__(settings_dict, alias)
        self.config()  # a setting it cannot honour fails here, at start-up
        self.session: ExclusiveSession | None = None

    def config(self) -> BackendConfig:
        """The checked configuration of this alias (ImproperlyConfigured if wrong)."""
        try:
            return read_config(self.alias, self.settings_dict)
        except ConfigError as exc:
            raise ImproperlyConfigured(str(exc)) from None

    def gateway(self) -> Gateway:
        """The gateway this alias runs on in this process (connecting if needed)."""
        self.ensure_connection()
        return self.connection.gateway  # type: ignore[no-any-return]

    def get_connection_params(self) -> dict[str, Any]:
        config = self.config()
        # An atomic() block holds the writer from its start (EXCLUSIVE is the same in WAL).
        mode = self.settings_dict["OPTIONS"].get("transaction_mode")
        self.transaction_mode = "EXCLUSIVE" if str(mode).upper() == "EXCLUSIVE" else "IMMEDIATE"
        self.init_commands: list[str] = []  # refused by config(): the gateway sets them up
        return {"database": config.path,
                "connection_setup": config.setup(register_functions),
                **config.options}

    @async_unsafe
    def get_new_connection(self, conn_params: dict[str, Any]) -> Database.Connection:
        return Database.connect(**conn_params)

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        return CursorWrapper(self.connection, self)

    def _start_transaction_under_autocommit(self) -> None:
        begin = "BEGIN EXCLUSIVE" if self.transaction_mode == "EXCLUSIVE" else "BEGIN IMMEDIATE"
        if self.session is not None:
            self.session.execute(begin)
        else:
            self.cursor().execute(begin)

    def _commit(self) -> None:
        if self.session is not None:
            if self.session.in_transaction:
                self.session.execute("COMMIT")
            return
        super()._commit()

    def _rollback(self) -> None:
        if self.session is not None:
            if self.session.in_transaction:
                self.session.execute("ROLLBACK")
            return
        super()._rollback()

    def _close(self) -> None:
        self.end_session()
        super()._close()

    # -- foreign keys during schema changes ---------------------------------------------

    def disable_constraint_checking(self) -> bool:
        """Hold the writer alone with foreign keys off, until
        :meth:`enable_constraint_checking`. False (nothing done) inside a
        transaction, where SQLite cannot turn them off either."""
        self.ensure_connection()
        if self.session is not None:
            return True
        if self.in_atomic_block or self.connection.in_transaction:
            return False
        db = self.connection.gateway
        self.session = ExclusiveSession.open(db, db.timeout)
        return True

    def enable_constraint_checking(self) -> None:
        if self.session is not None and not self.session.in_transaction:
            self.end_session()

    def end_session(self) -> None:
        """End a schema change's exclusive session (rolled back if left open)."""
        session, self.session = self.session, None
        if session is not None:
            session.close()
