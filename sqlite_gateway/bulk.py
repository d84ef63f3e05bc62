"""``Gateway.bulk``'s two halves: the slice a worker runs, and the note on its error.

A bulk job is cut into requests that each hold the writer for about
``background_slice`` seconds (or less, when interactive work arrives), sent
one after another; each slice commits on its own. When one fails, the note
added to its exception says what the file holds: how many parameter sets are
known committed, and what became of the failing slice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import apsw

from .arguments import Params
from .connection import Connection
from .errors import GatewayClosed, GatewayError, RequestTimeout
from .request import Request

_SLICE_STEP = 4  # parameter sets run between two looks at the clock


def run_slice(conn: Connection, sql: str, rows: list[Params], start: int, seconds: float,
              preempted: Callable[[], bool] | None) -> tuple[int, int]:
    """On the worker: run rows[start:] until ``seconds`` have passed or
    ``preempted()`` says interactive work waits (after at least one step);
    return (parameter sets run, rows changed)."""
    deadline = time.monotonic() + seconds
    end = start
    changed = 0
    while end < len(rows):
        step = rows[end:end + _SLICE_STEP]
        changed += conn.executemany(sql, step).rowcount
        end += len(step)
        if time.monotonic() >= deadline or (preempted is not None and preempted()):
            break
    return end - start, changed


def add_note(exc: BaseException, request: Request, done: int, total: int) -> None:
    """Add to ``exc`` what bulk() knows of the file when ``request`` (its slice
    from ``done``) raised it."""
    future = request.future  # (the async door's requests; a cancelled task lands here)
    if future is not None and future.done() and not future.cancelled() and (
            future.exception() is None):
        # Its answer came as the caller was interrupted (a cancelled task): committed.
        done += future.result()[0]
        fate = "the slice before this error was committed"
    elif (isinstance(exc, RequestTimeout) and not exc.started) or (
            future is not None and future.cancelled()):
        fate = "the slice after them had not started and will not run"
    elif isinstance(exc, RequestTimeout) or (not request.done
                                             and not isinstance(exc, GatewayError)):
        # The caller stopped waiting (a timeout after it started, Ctrl-C) on an
        # accepted slice: it may commit all the same (it may even have by now).
        fate = (f"the slice that starts at parameter set {done} was accepted and may still "
                "commit (all of it or none of it)")
    elif not request.done:
        fate = "the slice after them was not accepted"  # refused at once (closed, full)
    elif isinstance(exc, GatewayClosed):  # answered by a gateway that broke meanwhile
        fate = "the error says whether the slice after them may be committed"
    elif isinstance(exc, (apsw.IOError, apsw.CorruptError)):
        # Perhaps from the COMMIT itself: SQLite may have written the slice
        # before a failed fsync, so the file may hold it.
        fate = (f"the slice that starts at parameter set {done} may still commit (all of "
                "it or none of it): after an I/O error its outcome is unknown")
    else:
        fate = "the slice after them was rolled back"  # its own error
    known = f"bulk(): {done} of {total} parameter sets were committed before this error"
    note = f"{known}; {fate}; no later slice was sent"
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # no add_note() before 3.11: the same attribute, by hand
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
