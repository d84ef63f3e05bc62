"""The history checker's two judges: what an answer means, and whether the file agrees.

:func:`classify` turns what a caller actually got (a value, or an exception with
its attributes and notes) into one of three outcomes, using nothing but the
gateway's public word for it:

- ``ACK``: the call returned; its writes must be in the file;
- ``NOT``: refused before queueing, or failed; none of its writes may be there;
- ``MAY``: the answer says the outcome is unknown; all of its writes or none.

:func:`check` then compares a recorded history with the rows and counters of
the final file and lists every :class:`Violation`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterable
from typing import Any

import apsw

from sqlite_gateway import (GatewayClosed, GatewayError, Overloaded, RequestTimeout,
                            WriteBlockExpired)

ACK, NOT, MAY = "ack", "not", "may"
# SQLite errors a history's faults can cause: each fails its call. Any other
# (a ConstraintError on the history's unique ids would mean a write ran
# twice) is "unexpected", a violation.
EXPECTED_SQLITE = (apsw.InterruptError, apsw.BusyError, apsw.CantOpenError)


class Boom(Exception):
    """Raised by the history's own transaction fns: the call must keep nothing."""


class Withdrawn(Exception):
    """The caller cancelled its submit future before the request started (it never runs)."""


def _notes(exc: BaseException) -> str:
    return " ".join(str(n) for n in getattr(exc, "__notes__", ()))


def describe(exc: BaseException) -> str:
    """The exception as the caller saw it, for the log: class, message, notes."""
    notes = _notes(exc)
    text = f"{type(exc).__name__}: {exc}" + (f" [notes: {notes}]" if notes else "")
    return text[:400]


def classify(exc: BaseException, interrupted: str = NOT) -> tuple[str, str]:
    """The outcome an exception announces, and a short name for why.

    ``RequestTimeout(interrupted=True)`` (and a cancellation whose note says
    the statement was interrupted) counts as ``interrupted``: NOT by default,
    since it says the running statement was stopped at the caller's deadline,
    and a caller who retries must not write twice; MAY if the library's
    contract is that it may still commit.

    Any other error counts as MAY only if its message or a note says so ("may
    be committed", "may still commit"): an ``apsw.Error`` without such a note
    is "nothing of the call is kept", as ``Gateway.execute`` documents, an
    ``apsw.IOError`` included.
    """
    if isinstance(exc, RequestTimeout):
        if not exc.started:
            return NOT, "timeout-not-started"
        if exc.interrupted:
            return interrupted, "timeout-interrupted"
        return MAY, "timeout-started"
    says_may = any(p in f"{exc} {_notes(exc)}" for p in ("may be committed", "may still commit"))
    if isinstance(exc, GatewayClosed):
        return (MAY, "closed-may") if says_may else (NOT, "closed")
    if isinstance(exc, Overloaded):
        return NOT, "overloaded"
    if isinstance(exc, WriteBlockExpired):
        return NOT, "block-expired"  # the block was rolled back: nothing of it is kept
    if isinstance(exc, GatewayError) and "the block's writes were undone" in str(exc):
        return NOT, "block-batch-rolled-back"
    if isinstance(exc, asyncio.CancelledError):
        notes = _notes(exc)
        if "it was committed" in notes:
            return ACK, "cancelled-committed"
        if "may still commit" in notes:
            return MAY, "cancelled-may"
        if "interrupted" in notes:
            return interrupted, "cancelled-interrupted"
        if "will not run" in notes or "it failed" in notes or "nothing was written" in notes:
            return NOT, "cancelled"
        # No word from the gateway (a submit() future, or a task cancelled
        # before its call): the caller cannot tell whether it ran.
        return MAY, "cancelled-no-note"
    if isinstance(exc, apsw.IOError):
        return (MAY, "io-error-may") if says_may else (NOT, "io-error")
    if isinstance(exc, EXPECTED_SQLITE):
        return NOT, f"sqlite-{type(exc).__name__}"
    if isinstance(exc, Boom):
        return NOT, "fn-raised"
    if isinstance(exc, Withdrawn):
        return NOT, "withdrawn"
    return NOT, f"unexpected-{type(exc).__name__}"


def classify_bulk(exc: BaseException, interrupted: str = NOT) -> tuple[int, str, str]:
    """For a failed ``bulk()``: (parameter sets known committed, the rest's outcome, why).

    The note on the error says how many sets were committed before it and
    what became of the slice after them; the slices after that were not sent.
    """
    notes = _notes(exc)
    head, sep, _ = notes.partition(" of ")
    done = int(head.rsplit(" ", 1)[-1]) if sep and "bulk():" in head else 0
    if "may still commit" in notes:
        return done, MAY, "bulk-may"
    if "the error says whether" in notes:
        outcome, why = classify(exc, interrupted)
        return done, outcome, f"bulk-{why}"
    if "bulk():" not in notes:
        outcome, why = classify(exc, interrupted)
        return done, outcome, f"bulk-no-note-{why}"
    return done, NOT, "bulk-rest-not"


@dataclasses.dataclass
class Op:
    """One call as recorded: its rows, counter increment and outcome."""

    op: int
    door: str
    rows: list[int]
    ctr: tuple[int, int] | None = None
    outcome: str | None = None  # None: no answer was recorded (kill -9 in flight)
    why: str = ""
    acked: int = 0  # bulk: the first ``acked`` rows are known committed
    answer: str = ""  # the exception the caller got, described
    never: list[int] = dataclasses.field(default_factory=list)  # rolled-back savepoint rows


@dataclasses.dataclass
class Violation:
    """A broken promise: its kind, the op (if one), what was seen, the answer's class."""

    kind: str
    op: int | None
    detail: str
    why: str = ""  # how the caller's answer was classified (see classify)


def load(entries: Iterable[dict[str, Any]]) -> tuple[dict[int, Op], list[Violation]]:
    """Rebuild the ops from a history's log lines (intents, outcomes, run-time findings)."""
    ops: dict[int, Op] = {}
    found: list[Violation] = []
    for e in entries:
        kind = e["e"]
        if kind == "intent":
            ctr = e.get("ctr")
            ops[e["op"]] = Op(e["op"], e["door"], e["rows"], tuple(ctr) if ctr else None,
                              never=e.get("never") or [])
        elif kind == "out":
            op = ops[e["op"]]
            op.outcome, op.why, op.acked = e["o"], e["why"], e.get("n", 0)
            op.answer = e.get("exc") or "returned"
        elif kind == "violation":
            found.append(Violation(e["kind"], e.get("op"), e["detail"]))
    return ops, found


def check(ops: dict[int, Op], present: dict[int, int], counters: dict[int, int],
          integrity: str) -> tuple[list[Violation], Counter[str]]:
    """Compare the history with the file: (violations, MAY outcomes found committed by why).

    ``present`` maps each row id in the file to its op; ``counters`` each counter
    to its value. Checks: acknowledged writes there, refused or failed ones
    absent, no partial write, bulk rows a prefix in order, every counter the sum
    of the increments whose rows are there, no row of an unknown op, no row
    written inside a savepoint whose body raised (``Op.never``).
    """
    found: list[Violation] = []
    may_there: Counter[str] = Counter()
    if integrity != "ok":
        found.append(Violation("integrity", None, integrity))
    expected = Counter[int]()
    for op in ops.values():
        kept = [r for r in op.never if r in present]
        if kept:  # written inside a savepoint whose body raised: rolled back, whatever else
            found.append(Violation("savepoint-kept", op.op, f"{op.door} ({op.why}): rows "
                                   f"{kept} of a savepoint that raised are in the file", op.why))
        there = [r in present for r in op.rows]
        n_there = sum(there)
        if op.door.endswith("bulk"):
            if there != sorted(there, reverse=True):
                found.append(Violation("bulk-not-a-prefix", op.op, f"{op.why}: {there}", op.why))
            if op.outcome == ACK and n_there != len(op.rows):
                found.append(Violation("lost-ack", op.op, f"{op.door}: {n_there}/{len(op.rows)}",
                                       op.why))
            elif op.outcome is not None and n_there < op.acked:
                found.append(Violation("lost-ack", op.op,
                                       f"{op.door} {op.why}: {n_there} < {op.acked} acked", op.why))
            elif op.outcome == NOT and n_there > op.acked:
                found.append(Violation("kept-failed", op.op,
                                       f"{op.door} {op.why}: {n_there} > {op.acked} acked; "
                                       f"answer {op.answer}", op.why))
            elif op.outcome == MAY and n_there > op.acked:
                may_there[op.why] += 1
            continue
        if 0 < n_there < len(op.rows):
            found.append(Violation("partial", op.op, f"{op.door}: {n_there}/{len(op.rows)}",
                                   op.why))
        if n_there and op.ctr:
            expected[op.ctr[0]] += op.ctr[1]
        if op.outcome == ACK and n_there < len(op.rows):
            found.append(Violation("lost-ack", op.op, f"{op.door} ({op.why}) answered "
                                   "with its value but is not in the file", op.why))
        elif op.outcome == NOT and n_there:
            found.append(Violation("kept-failed", op.op, f"{op.door} answered {op.why} "
                                   f"but is in the file; answer {op.answer}", op.why))
        elif op.outcome in (MAY, None) and n_there:
            may_there[op.why or "no-answer(killed)"] += 1
    for key, value in counters.items():
        if value != expected[key]:
            found.append(Violation("counter", None, f"counter {key} = {value}, the ops "
                                   f"whose rows are there add up to {expected[key]}"))
    unknown = [r for r, op in present.items() if op not in ops]
    if unknown:
        found.append(Violation("unknown-rows", None, f"{len(unknown)} rows of no recorded "
                               f"op, e.g. {unknown[:5]}"))
    return found, may_there
