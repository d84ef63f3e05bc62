"""Column names and row counts for a Result, as DB-API means them.

A :class:`~sqlite_gateway.Result` carries its column names whether rows came
back or not, and its ``rowcount`` is what DB-API and ``sqlite3`` mean: the
rows the call's own INSERT/UPDATE/DELETE statements changed (SQLite's
``changes()``), not those changed by their triggers, foreign-key actions or
REPLACE deletions (which ``total_changes()`` also counts).

Row counts. A single statement needs one ``changes()`` call after it ran
(when the change total moved: ``changes()`` keeps its value across a query).
A string of several statements, and ``executemany``, run with an exec tracer
(:class:`Trace`) that sees each statement (or parameter set) begin and adds
up the one before it.

Column names. With rows, they come from the cursor at the first row. With
none, the statement is prepared once more after the run (:func:`describe`,
nothing run); a text found to return no columns at all (an INSERT without
RETURNING, DDL) is remembered, process-wide, and never described again (that
is fixed by parsing). Why after the run and not from the tracer: a statement
whose schema changed since it was prepared (``ALTER TABLE``, another
connection's DDL) is re-prepared by SQLite at its first step, and apsw keeps
a description read before that step, so the names a ``*`` stands for would
be the old ones. After the run, apsw's statement cache holds the re-prepared
statement. The tracer never reads a description.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

from .memo import TextMemo

_DESCRIBE_MAX = 1000  # statements of one text looked at for column names

_columnless: TextMemo[bool] = TextMemo()
columnless = _columnless.map
"""SQL texts that return no columns: their empty results need no describe().
Bounded in entries and bytes (a TextMemo); every thread shares it."""


class Trace:
    """An exec tracer that counts each statement's own changes as the next begins.

    ``then``: another tracer, called first (its verdict stands: False stops
    the statement). ``statements``: a list that receives each statement's
    text as it begins (as :func:`~sqlite_gateway.connection.read_rows`
    needs), or None. Never reads a description (see the module docstring).
    """

    __slots__ = ("conn", "mark", "changes", "then", "statements")

    def __init__(self, conn: apsw.Connection, mark: int,
                 then: Callable[[apsw.Cursor, str, Any], bool] | None,
                 statements: list[str] | None = None) -> None:
        self.conn = conn
        self.mark = mark  # total_changes() when the previous statement began
        self.changes = 0
        self.then = then
        self.statements = statements

    def __call__(self, cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        then = self.then
        if then is not None and not then(cursor, statement, bindings):
            return False
        conn = self.conn
        # changes() keeps its value across a SELECT: count it only when the
        # statement before this one changed something (the total moved).
        total = conn.total_changes()
        if total != self.mark:
            self.changes += conn.changes()
            self.mark = total
        if self.statements is not None:
            self.statements.append(statement)
        return True

    def finish(self) -> int:
        """After the run: the rows changed by the statements themselves, summed."""
        conn = self.conn
        if conn.total_changes() != self.mark:
            self.changes += conn.changes()
        return self.changes


def names_when_empty(conn: apsw.Connection, sql: str, params: Any) -> tuple[str, ...]:
    """The column names of a call that returned no row (see :func:`describe`);
    ``()`` at once for a text known to return none."""
    if sql in columnless:
        return ()
    names = describe(conn, sql, params)
    if not names:
        _columnless.remember(sql, True)
    return names


def describe(conn: apsw.Connection, sql: str, params: Any) -> tuple[str, ...]:
    """The column names of the first statement of ``sql`` that returns data,
    prepared again after the run and not run.

    For a call that returned no row: its cursor finished before its
    description could be read. Each statement comes from apsw's cache; an
    exec tracer stops it before its first step. ``()`` if none returns data,
    or a statement cannot be prepared now (its table was dropped by the same
    call, say).
    """
    rest, bindings = sql, params
    for _ in range(_DESCRIBE_MAX):
        if not rest or rest.isspace():
            return ()
        found: list[tuple[str, tuple[tuple[str, str], ...], int]] = []

        def stop(cursor: apsw.Cursor, statement: str, _bindings: Any,
                 found: list[tuple[str, tuple[tuple[str, str], ...], int]] = found) -> bool:
            found.append((statement, cursor.get_description(), cursor.bindings_count))
            return False

        cursor = conn.cursor()
        cursor.exec_trace = stop
        try:
            cursor.execute(rest, bindings)
        except apsw.ExecTraceAbort:
            pass
        except apsw.Error:
            return ()
        finally:
            cursor.close()
        if not found:
            return ()  # nothing left but comments or blanks
        statement, description, used = found[0]
        if description:
            return tuple([column[0] for column in description])
        at = rest.find(statement)
        if at < 0 or not statement.strip():
            return ()  # (apsw shows a remainder of comments as an empty statement)
        rest = rest[at + len(statement):]
        if isinstance(bindings, (list, tuple)):
            bindings = bindings[used:]
    return ()
