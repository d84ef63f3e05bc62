"""Savepoints inside a transaction fn or a write block: units that roll back alone.

``with conn.savepoint():`` inside ``db.transaction(fn)`` (or on a write block's
handle) runs its statements in a nested unit: when the ``with`` body raises,
only that unit's writes are undone (``ROLLBACK TO``), the exception goes on
out of the ``with``, and the fn may catch it and carry on; when it ends
normally the unit is kept (``RELEASE``) and commits with the rest. Nested to
any depth, innermost first.

The savepoints are the gateway's own: explicit ``SAVEPOINT`` SQL from callers
stays refused by the transaction guard. Each name carries the writer's
per-process random nonce (the same as the worker's own savepoint around each
request) and the depth, so the guard lets exactly these through by name, no
caller's SQL can name, release or roll back one of them, and their texts are
few and stay prepared in apsw's statement cache.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Literal

from .errors import GatewayError

if TYPE_CHECKING:
    from .connection import Connection


class Savepoint:
    """One nested unit of a transaction fn (``conn.savepoint()``); a context manager.

    Entered once, exited once, innermost first, and only while its fn (or
    write block) runs: every misuse raises :class:`~sqlite_gateway.GatewayError`
    saying what to change, and the transaction stays as it was. Not
    thread-safe: use it in the thread that runs the fn (or holds the block).

    ``__exit__`` without an exception releases the unit (its writes commit
    with the transaction); with one, it rolls the unit back and lets the
    exception propagate. :meth:`rollback` undoes the unit's writes so far and
    keeps it open.
    """

    __slots__ = ("_handle", "_sql", "_entered", "_exited")

    def __init__(self, handle: Connection) -> None:
        self._handle = handle
        self._sql: tuple[str, str, str] = ("", "", "")  # SAVEPOINT, RELEASE, ROLLBACK TO
        self._entered = False
        self._exited = False

    def __enter__(self) -> Savepoint:
        handle = self._handle
        conn = handle._check_open()
        if self._entered:
            raise GatewayError("this savepoint was entered already; each conn.savepoint() "
                               "is one unit: call conn.savepoint() again for another")
        stack = handle._savepoints
        if stack is None:
            stack = handle._savepoints = []
        own = handle._guard.own_savepoint
        if own is None:  # pragma: no cover - a handle always belongs to the writer
            raise GatewayError("savepoints need the gateway's write connection")
        self._sql = _statements(own, len(stack))
        conn.execute(self._sql[0])
        self._entered = True
        stack.append(self)
        return self

    def _check_innermost(self, what: str) -> None:
        if not self._entered or self._exited:
            raise GatewayError(f"this savepoint cannot be {what}: it is not open (enter it "
                               "with 'with conn.savepoint():', once)")
        stack = self._handle._savepoints
        if not stack or stack[-1] is not self:
            raise GatewayError(f"this savepoint cannot be {what} while a savepoint nested in "
                               "it is still open: exit savepoints innermost first")

    def rollback(self) -> None:
        """Undo the unit's writes so far; the unit stays open (it may go on).

        Raises:
            GatewayError: the fn has returned, the savepoint is not open, or
                one nested in it is still open.
        """
        self._handle._check_open()
        self._check_innermost("rolled back")
        self._handle._conn.execute(self._sql[2])

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        handle = self._handle
        if not handle._open:
            self._exited = True
            raise GatewayError("this savepoint was exited after its transaction fn returned "
                               "(or its write block ended); use it only inside that call")
        self._check_innermost("exited")
        self._exited = True
        stack = handle._savepoints
        assert stack is not None
        stack.pop()
        conn = handle._conn
        if conn.get_autocommit():
            # A statement ended the whole transaction (OR ROLLBACK, RAISE(ROLLBACK)):
            # the unit is gone with it. An error on its way out says more than ours.
            if exc is None:
                handle._check_open()  # raises: the transaction was rolled back as a whole
            return False
        if exc is None:
            conn.execute(self._sql[1])
        else:
            conn.execute(self._sql[2])
            conn.execute(self._sql[1])
        return False

    def __repr__(self) -> str:
        state = "open" if self._entered and not self._exited else (
            "done" if self._exited else "new")
        return f"<Savepoint {state}>"


def _statements(own: str, depth: int) -> tuple[str, str, str]:
    """The SAVEPOINT, RELEASE and ROLLBACK TO texts of the unit at ``depth``
    (few and fixed per process: they stay in apsw's statement cache)."""
    name = f"{own}_{depth}"  # the writer's nonce: no caller's SQL can name it
    return f"SAVEPOINT {name}", f"RELEASE {name}", f"ROLLBACK TO {name}"
