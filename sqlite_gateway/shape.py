"""What a SQL text is, learned on its first run: column names and row counts for Result.

A :class:`~sqlite_gateway.Result` carries its column names whether rows came
back or not, and its ``rowcount`` is what DB-API and ``sqlite3`` mean: the
rows the call's own INSERT/UPDATE/DELETE statements changed (SQLite's
``changes()``), not those changed by their triggers, foreign-key actions or
REPLACE deletions (which ``total_changes()`` also counts).

Both are cheap only if the text's *shape* is known: one statement or several,
and whether any of them returns columns. The first run of a text (and every
run of a string of several statements, and every ``executemany``) goes
through an exec tracer (:class:`Trace`) that sees each statement before it
runs: it adds up ``changes()`` statement by statement and notes the first
column names; the shape is then remembered per text, process-wide (a text's
shape never changes: it is fixed by parsing). From then on a single statement
runs untraced: its rowcount is one ``changes()`` call and its columns come
from the cursor at the first row. The first time a known query returns no
row, it is prepared once more (:func:`describe`, nothing run) for its column
names, and marked EMPTY: from then on it runs traced too, and the tracer
notes its columns. Queries that always find rows, and writes, stay untraced.

A schema change: the tracer sees a statement from apsw's cache before its
first step, and SQLite re-prepares a statement whose schema changed only at
that step. Column names written in the text cannot change that way, but
those a ``*`` stands for can (``ALTER TABLE ... ADD COLUMN``): for a text
with a ``*`` that found no row, :func:`columns_after` prepares it again after
the run, when the cache holds the re-prepared statement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

from .memo import TextMemo

MULTI = 1  # several statements
COLUMNLESS = 2  # no statement returns columns (INSERT/UPDATE/DELETE without RETURNING, DDL)
EMPTY = 4  # returns columns, and has returned no row at least once
TRACED = MULTI | EMPTY  # shapes that run traced every time

_memo: TextMemo[int] = TextMemo()  # bounded in entries and in bytes (texts may be long)
shapes: dict[str, int] = _memo.map
"""SQL text -> its shape (MULTI | COLUMNLESS | EMPTY bits), learned on its first
successful run; read on every run (dict operations are atomic: every thread shares it)."""


class Trace:
    """An exec tracer that counts what the statements of one call do.

    ``conn`` None: a read-only connection, where nothing changes (no counts
    are read). ``then``: the caller's own tracer, called after (its verdict
    stands: False stops the statement).
    """

    __slots__ = ("conn", "mark", "changes", "statements", "columns", "then", "look")

    def __init__(self, conn: apsw.Connection | None, mark: int,
                 then: Callable[[apsw.Cursor, str, Any], bool] | None,
                 many: bool = False) -> None:
        self.conn = conn
        self.mark = mark  # total_changes() when the previous statement began
        self.changes = 0
        self.statements = 0
        self.columns: tuple[str, ...] = ()
        self.then = then
        # Read descriptions until one has columns; executemany runs one
        # statement again and again: its first look is the only one needed.
        self.look = 1 if many else -1

    def __call__(self, cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        conn = self.conn
        if conn is not None:
            # changes() keeps its value across a SELECT: count it only when the
            # statement before this one changed something (the total moved).
            total = conn.total_changes()
            if total != self.mark:
                self.changes += conn.changes()
                self.mark = total
        self.statements += 1
        if self.look and not self.columns:
            self.look -= 1
            description = cursor.get_description()
            if description:
                self.columns = tuple([column[0] for column in description])
        then = self.then
        return True if then is None else then(cursor, statement, bindings)

    def finish(self, sql: str | None, empty: bool) -> int:
        """After the run: the rows changed, all statements summed; remember the
        shape of ``sql`` (None: do not, e.g. executemany), ``empty`` if no row
        came back."""
        conn = self.conn
        if conn is not None and conn.total_changes() != self.mark:
            self.changes += conn.changes()
        if sql is not None:
            known = shapes.get(sql)
            shape = (MULTI if self.statements > 1 else 0) | (
                (EMPTY if empty else 0) if self.columns else COLUMNLESS)
            if known is None or shape & ~known:  # new, or newly EMPTY (which stays)
                remember(sql, shape | (known or 0))
        return self.changes


def remember(sql: str, shape: int) -> None:
    """Record the shape of ``sql`` (the memo is bounded: cleared when full; a
    text too long to keep pays its first-run cost each time)."""
    _memo.remember(sql, shape)


def describe(conn: apsw.Connection, sql: str, params: Any) -> tuple[str, ...]:
    """The column names of ``sql`` (one statement), prepared again and not run.

    For a query that returned no row: its cursor finished before its
    description could be read. The statement comes from apsw's cache; the
    exec tracer stops it before its first step. ``()`` if it cannot be
    prepared now (its table was dropped by the same call, say).
    """
    found: list[tuple[tuple[str, str], ...]] = []

    def stop(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        found.append(cursor.get_description())
        return False

    cursor = conn.cursor()
    cursor.exec_trace = stop
    try:
        cursor.execute(sql, params)
    except apsw.ExecTraceAbort:
        pass
    except apsw.Error:
        return ()
    finally:
        cursor.close()
    return tuple([column[0] for column in found[0]]) if found else ()


def columns_after(conn: apsw.Connection, sql: str, params: Any,
                  traced: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of a traced run that found no row: ``traced`` (what the
    tracer saw), read again after the run when a ``*`` may stand for columns
    that changed (see the module docstring)."""
    if traced and "*" in sql:
        return describe(conn, sql, params) or traced
    return traced
