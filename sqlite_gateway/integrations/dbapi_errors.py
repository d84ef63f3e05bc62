"""PEP 249's exception classes, and SQLite's errors mapped onto them as ``sqlite3`` maps them.

The DB-API adapter raises these, so an ORM recognises them by class (a
constraint violation is an :class:`IntegrityError`, which SQLAlchemy turns
into its own ``IntegrityError``). The apsw error stays reachable as
``__cause__``, with ``sqlite_errorcode`` (the extended result code) and
``sqlite_errorname`` set as ``sqlite3`` sets them.
"""

from __future__ import annotations

import apsw

__all__ = ["Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
           "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
           "NotSupportedError", "mapped"]


class Warning(Exception):  # noqa: A001 (PEP 249's name)
    """PEP 249's Warning (never raised here)."""


class Error(Exception):
    """Base of the DB-API errors."""

    sqlite_errorcode: int | None = None
    sqlite_errorname: str | None = None


class InterfaceError(Error):
    """Misuse of the interface (a bad binding, a closed object)."""


class DatabaseError(Error):
    """An error of the database."""


class DataError(DatabaseError):
    """A value too big or out of range."""


class OperationalError(DatabaseError):
    """SQL that could not run: no such table, a syntax error, a lock, I/O."""


class IntegrityError(DatabaseError):
    """A constraint was violated (UNIQUE, NOT NULL, CHECK, FOREIGN KEY)."""


class InternalError(DatabaseError):
    """SQLite's internal error."""


class ProgrammingError(DatabaseError):
    """Wrong use: a closed connection, wrong number of parameters."""


class NotSupportedError(DatabaseError):
    """A feature of sqlite3 that the gateway does not carry over."""


# As CPython's Modules/_sqlite/util.c maps SQLite's primary result codes.
_BY_CLASS: tuple[tuple[type[apsw.Error], type[Error]], ...] = (
    (apsw.ConstraintError, IntegrityError),
    (apsw.MismatchError, IntegrityError),
    (apsw.TooBigError, DataError),
    (apsw.InternalError, InternalError),
    (apsw.NotFoundError, InternalError),
    (apsw.CorruptError, DatabaseError),
    (apsw.NotADBError, DatabaseError),
    (apsw.MisuseError, InterfaceError),
    (apsw.RangeError, InterfaceError),
    (apsw.BindingsError, ProgrammingError),
    (apsw.ExecutionCompleteError, ProgrammingError),
    (apsw.CursorClosedError, ProgrammingError),
    (apsw.ConnectionClosedError, ProgrammingError),
    (apsw.NoMemError, OperationalError),
)


def mapped(exc: apsw.Error) -> Error:
    """The DB-API error for apsw's ``exc`` (raise it ``from exc``)."""
    cls: type[Error] = OperationalError  # SQLITE_ERROR, BUSY, LOCKED, IOERR, INTERRUPT...
    for apsw_class, dbapi_class in _BY_CLASS:
        if isinstance(exc, apsw_class):
            cls = dbapi_class
            break
    error = cls(str(exc).removeprefix(f"{type(exc).__name__}: "))
    code = getattr(exc, "extendedresult", None)
    error.sqlite_errorcode = code if isinstance(code, int) else None
    if isinstance(code, int):
        name = apsw.mapping_extended_result_codes.get(code) or apsw.mapping_result_codes.get(
            code & 0xFF)
        error.sqlite_errorname = name if isinstance(name, str) else None
    return error
