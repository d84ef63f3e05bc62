"""The DB-API cursor of :mod:`sqlite_gateway.integrations.dbapi`.

A statement's rows are all fetched when ``execute`` returns (the gateway
copies them out of SQLite before answering), so a cursor is a list of rows
with a position; it holds no SQLite statement and nothing to close.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import apsw

from ..result import Result
from .dbapi_errors import ProgrammingError, mapped

if TYPE_CHECKING:
    from .dbapi import Connection

__all__ = ["Cursor"]


_DML = ("insert", "update", "delete", "replace")


def _is_dml(sql: str) -> bool:
    """As sqlite3's own test: the first keyword (after comments) changes rows."""
    text = sql.lstrip()
    while text.startswith(("--", "/*")):
        end = text.find("\n") if text.startswith("--") else text.find("*/") + 1
        if end <= 0:
            return False
        text = text[end + 1:].lstrip()
    return text[:7].lower().startswith(_DML)


class Cursor:
    """A DB-API cursor: every row is fetched when ``execute`` returns.

    ``description`` names the columns of a statement that returns rows, even
    when it returned none (7-tuples, the last six None); None otherwise.
    ``rowcount`` is the rows the statement changed (SQLite's ``changes()``,
    summed over ``executemany``), -1 for a statement that is not
    INSERT/UPDATE/DELETE/REPLACE. ``lastrowid`` is the rowid of the last
    INSERT or REPLACE.
    """

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.row_factory = None
        self._rows: tuple[tuple[Any, ...], ...] = ()
        self._pos = 0
        self._closed = False

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        self._check()
        result, _ = self.connection._run(sql, parameters, False)
        self._set(result, sql)
        return self

    def executemany(self, sql: str, seq_of_parameters: Any) -> Cursor:
        self._check()
        result, _ = self.connection._run(sql, seq_of_parameters, True)
        self._set(result, sql)
        return self

    def executescript(self, script: str) -> Cursor:
        """Commit any open transaction, then run ``script`` as one gateway call."""
        self._check()
        self.connection.commit()
        try:
            result = self.connection._gateway().execute(script)
        except apsw.Error as exc:
            raise mapped(exc) from exc
        self._set(result, "")
        return self

    def _set(self, result: Result, sql: str) -> None:
        columns = result.columns
        self.description = tuple((name, None, None, None, None, None, None)
                                 for name in columns) if columns else None
        self._rows, self._pos = result.rows, 0
        if _is_dml(sql):
            self.rowcount = result.rowcount
            self.lastrowid = result.lastrowid
        else:
            self.rowcount = -1

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        self.connection._check_open()

    def fetchone(self) -> Any:
        self._check()
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._check()
        end = self._pos + (self.arraysize if size is None else size)
        rows = self._rows[self._pos:end]
        self._pos += len(rows)
        return list(rows)

    def fetchall(self) -> list[Any]:
        self._check()
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return list(rows)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        self._closed = True
        self._rows = ()

    def setinputsizes(self, sizes: Sequence[Any]) -> None:
        pass

    def setoutputsize(self, size: int, column: int | None = None) -> None:
        pass
