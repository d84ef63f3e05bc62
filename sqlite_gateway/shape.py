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
runs and adds up ``changes()`` statement by statement; the shape is then
remembered per text, process-wide (a text's shape never changes: it is fixed
by parsing). From then on a single statement runs untraced: its rowcount is
one ``changes()`` call, and its columns come from the cursor at the first
row. A query that returns no row is prepared once more after the run
(:func:`describe`, nothing run) for its column names.

Why after, not from the tracer: a statement whose schema changed since it was
prepared (``ALTER TABLE``, another connection's DDL) is re-prepared by SQLite
at its first step, and apsw keeps a description read before that step: the
names a ``*`` stands for would be the old ones. After the run, apsw's
statement cache holds the re-prepared statement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

from .memo import TextMemo

MULTI = 1  # several statements: traced every time
COLUMNLESS = 2  # no statement returns columns (INSERT/UPDATE/DELETE without RETURNING, DDL)
UNKNOWN = -1  # not seen yet: every bit set, so one test (shape & MULTI) sends it to the tracer

_DESCRIBE_MAX = 1000  # statements of one text looked at for column names
_memo: TextMemo[int] = TextMemo()  # bounded in entries and in bytes (texts may be long)
shapes: dict[str, int] = _memo.map
"""SQL text -> its shape (MULTI | COLUMNLESS bits), learned on its first successful
traced run; read on every run (dict operations are atomic: every thread shares it)."""


class Trace:
    """An exec tracer that counts what the statements of one call do.

    ``conn`` None: a read-only connection, where nothing changes (no counts
    are read). ``then``: the caller's own tracer, called after (its verdict
    stands: False stops the statement). It never reads a description (see
    the module docstring).
    """

    __slots__ = ("conn", "mark", "changes", "statements", "then")

    def __init__(self, conn: apsw.Connection | None, mark: int,
                 then: Callable[[apsw.Cursor, str, Any], bool] | None) -> None:
        self.conn = conn
        self.mark = mark  # total_changes() when the previous statement began
        self.changes = 0
        self.statements = 0
        self.then = then

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
        then = self.then
        return True if then is None else then(cursor, statement, bindings)

    def finish(self, sql: str | None, columns: tuple[str, ...]) -> int:
        """After the run: the rows changed, all statements summed; remember the
        shape of ``sql`` (None: do not, e.g. executemany) from its ``columns``."""
        conn = self.conn
        if conn is not None and conn.total_changes() != self.mark:
            self.changes += conn.changes()
        if sql is not None and sql not in shapes:
            remember(sql, (MULTI if self.statements > 1 else 0)
                     | (0 if columns else COLUMNLESS))
        return self.changes


def remember(sql: str, shape: int) -> None:
    """Record the shape of ``sql`` (the memo is bounded: cleared when full; a
    text too long to keep pays its first-run cost each time)."""
    _memo.remember(sql, shape)


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
        if at < 0:
            return ()
        rest = rest[at + len(statement):]
        if isinstance(bindings, (list, tuple)):
            bindings = bindings[used:]
    return ()

