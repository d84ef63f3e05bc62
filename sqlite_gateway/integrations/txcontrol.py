"""Transaction statements as a DB-API connection receives them, and the write
block they map onto.

ORMs drive transactions two ways: through the DB-API (``commit()``,
``rollback()``, sqlite3's implicit BEGIN before a write), and by sending
statements themselves in autocommit mode (peewee and Django send ``BEGIN``,
``SAVEPOINT "s1"``, ``RELEASE SAVEPOINT "s1"``, ``ROLLBACK TO SAVEPOINT "s1"``,
``COMMIT``; SQLAlchemy's ``begin_nested()`` sends the savepoint ones). The
gateway's guard refuses transaction control in SQL, so the adapter takes
these statements out before they reach it: :func:`parse` recognises exactly
one whole statement of those forms (an anchored match of the whole text, never
a prefix test: ``BEGIN; DROP TABLE t`` is not one of them and goes on to the
guard, which refuses it), and :class:`Block` carries them out on a write block
(``Gateway.writer()``) or, inside a transaction fn, on the fn's handle.

Imports no framework.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from ..result import Result

__all__ = ["Block", "TxStatement", "parse"]

_NAME = r'''(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+"|`(?:[^`]|``)+`|\[[^\]]+\])'''
_STATEMENT = re.compile(
    rf"""\s*(?:
        (?P<begin>BEGIN)(?:\s+(?P<mode>DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+TRANSACTION)?
      | (?P<commit>COMMIT|END)(?:\s+TRANSACTION)?
      | ROLLBACK(?:\s+TRANSACTION)?(?:\s+TO(?:\s+SAVEPOINT)?\s+(?P<rollback_to>{_NAME}))?
      | SAVEPOINT\s+(?P<savepoint>{_NAME})
      | RELEASE(?:\s+SAVEPOINT)?\s+(?P<release>{_NAME})
    )\s*;?\s*\Z""",
    re.IGNORECASE | re.VERBOSE)
_FIRST = frozenset("bBcCeErRsS \t\r\n")  # what a transaction statement can start with


class TxStatement(NamedTuple):
    """One recognised transaction statement.

    ``op`` is ``"begin"``, ``"commit"``, ``"rollback"``, ``"savepoint"``,
    ``"release"`` or ``"rollback_to"``; ``arg`` is the BEGIN mode
    (``"deferred"``, ``"immediate"``, ``"exclusive"``) or the savepoint's
    name, unquoted and folded to lower case (SQLite compares savepoint names
    without regard to case).
    """

    op: str
    arg: str = ""


def parse(sql: str) -> TxStatement | None:
    """The transaction statement ``sql`` is, whole; None for anything else.

    Comments are not part of the grammar: ``BEGIN /* x */`` is not
    recognised, reaches the gateway's guard and is refused there.
    """
    if not sql or sql[0] not in _FIRST:
        return None
    match = _STATEMENT.match(sql)
    if match is None:
        return None
    if match["begin"]:
        return TxStatement("begin", (match["mode"] or "deferred").lower())
    if match["commit"]:
        return TxStatement("commit")
    for op in ("rollback_to", "savepoint", "release"):
        if match[op]:
            return TxStatement(op, _unquote(match[op]))
    return TxStatement("rollback")


def _unquote(name: str) -> str:
    if name[0] in "\"`":
        name = name[1:-1].replace(name[0] * 2, name[0])
    elif name[0] == "[":
        name = name[1:-1]
    return name.lower()


class RollbackRequested(Exception):
    """Passed to a write block's or savepoint's ``__exit__`` to roll it back."""


class Block:
    """An open unit on the writer and its named savepoints, driven statement by statement.

    ``cm`` is the unit's context manager, already entered: a write block
    (``Gateway.writer()``), or a savepoint on a transaction fn's handle.
    ``handle`` runs statements in it and makes savepoints
    (``handle.savepoint()`` is a context manager). Not thread-safe: one
    DB-API connection drives it, from one thread at a time.

    Named savepoints follow SQLite: ``release(x)`` releases x and every
    savepoint made after it; ``rollback_to(x)`` undoes everything since x
    and leaves x open. Errors of the handle (SQLite's, the gateway's) are
    raised unchanged.
    """

    __slots__ = ("_cm", "handle", "_savepoints")

    def __init__(self, cm: AbstractContextManager[Any], handle: Any) -> None:
        self._cm: AbstractContextManager[Any] | None = cm
        self.handle = handle
        self._savepoints: list[tuple[str, AbstractContextManager[Any]]] = []

    def execute(self, sql: str, params: Any) -> Result:
        return self.handle.execute(sql, params)  # type: ignore[no-any-return]

    def executemany(self, sql: str, seq_of_params: Sequence[Any]) -> Result:
        return self.handle.executemany(sql, seq_of_params)  # type: ignore[no-any-return]

    def has_savepoint(self, name: str) -> bool:
        return any(n == name for n, _ in self._savepoints)

    def has_savepoints(self) -> bool:
        return bool(self._savepoints)

    def savepoint(self, name: str) -> None:
        cm = self.handle.savepoint()
        cm.__enter__()
        self._savepoints.append((name, cm))

    def release(self, name: str) -> None:
        """Release ``name`` (the latest of that name) and every savepoint after it."""
        self._unwind(self._index(name), rollback=False)

    def rollback_to(self, name: str) -> None:
        """Undo everything since savepoint ``name``; it stays open, as in SQLite."""
        index = self._index(name)
        self._unwind(index + 1, rollback=True)
        self._savepoints[index][1].rollback()  # type: ignore[attr-defined]

    def commit(self) -> None:
        """Release every savepoint and commit the unit (returns once committed)."""
        self._unwind(0, rollback=False)
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def rollback(self) -> None:
        """Undo the whole unit. Idempotent."""
        try:
            self._unwind(0, rollback=True)
        finally:
            cm, self._cm = self._cm, None
            if cm is not None:
                signal = RollbackRequested("rolled back by the DB-API connection")
                cm.__exit__(RollbackRequested, signal, None)

    def _index(self, name: str) -> int:
        for index in range(len(self._savepoints) - 1, -1, -1):
            if self._savepoints[index][0] == name:
                return index
        raise LookupError(name)

    def _unwind(self, index: int, rollback: bool) -> None:
        undone, self._savepoints[index:] = self._savepoints[index:], []
        for _, cm in reversed(undone):
            if rollback:
                cm.__exit__(RollbackRequested, RollbackRequested("rolled back"), None)
            else:
                cm.__exit__(None, None, None)
