"""A call's arguments, checked and captured in the caller's thread.

Every door (``Gateway``, ``AsyncGateway``, a snapshot, the DB-API module)
checks what it was given before anything is queued, so a bad value is a
clear error at the call and never a request that runs anyway; write-behind
calls and the async door also copy their parameters as they are at the call
(the caller may change its list or buffer meanwhile).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

Params = Union[Sequence[Any], Mapping[str, Any]]
"""Bindings of one statement: a sequence (``?``) or a mapping (``:name``)."""


PRIORITIES = {"interactive": 0, "background": 1}
"""Priority names and their queue lanes: lane 0 is served first."""


def lane_of(priority: object, block: object = False, timeout: object = None) -> int:
    """The queue lane of a call's ``priority``, with its ``block`` and, when it
    blocks, its ``timeout`` checked: the one parser of these, for every call
    and door. Raises a ValueError that says what to pass.

    The common case (an interactive call that does not block) is the first
    line: 0.06 us a call (timeit, load average 2.2), against 0.03 for the
    inline comparison each call site used to repeat.
    """
    if priority == "interactive" and block is False:
        return 0
    lane = PRIORITIES.get(priority) if isinstance(priority, str) else None
    if lane is None:
        raise ValueError(f"priority must be one of {', '.join(map(repr, PRIORITIES))}, "
                         f"not {priority!r}")
    if block is False:
        return lane
    if block is not True:
        raise ValueError(f"block must be True or False, not {block!r}")
    if not lane:
        raise ValueError("block=True is for background producers: pass "
                         "priority='background' (interactive callers fail fast "
                         "with Overloaded, so a web request never waits for room)")
    check_timeout(timeout)
    return lane


def check_timeout(timeout: object) -> float | None:
    """Return a per-call timeout in seconds (None: no limit) or raise at once.

    Checked before anything is queued, so a bad value never leaves a request
    behind that runs anyway.
    """
    if timeout is None:
        return None
    if (type(timeout) is float or type(timeout) is int) and 0 <= timeout <= TIMEOUT_MAX:
        return timeout
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and (
            0 <= timeout <= TIMEOUT_MAX):
        return float(timeout)
    raise ValueError(timeout_refused("timeout", timeout))


TIMEOUT_MAX = threading.TIMEOUT_MAX
"""The longest wait a lock can be asked for (a longer one raises OverflowError
after the request is queued): longer timeouts are refused at the call."""


def timeout_refused(name: str, value: object) -> str:
    """The error message for a timeout that is not a number of seconds a lock can wait."""
    return (f"{name} must be a number of seconds from 0 to threading.TIMEOUT_MAX "
            f"({TIMEOUT_MAX:.0f} s), or None for no limit; not {value!r}")


def check_many(seq_of_params: object) -> list[Params]:
    """Materialise an iterable of parameter sets (each checked by
    :func:`check_params`) in the caller's thread; a str or bytes is refused."""
    if isinstance(seq_of_params, (str, bytes)) or not isinstance(seq_of_params, Iterable):
        raise TypeError("seq_of_params must be an iterable of parameter sets, "
                        f"not {type(seq_of_params).__name__}")
    return [check_params(p) for p in seq_of_params]


def check_sql(sql: object) -> str:
    """Return ``sql`` if it is a non-empty str; raise a teaching error otherwise."""
    if type(sql) is not str:
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, not {type(sql).__name__}")
        sql = str(sql)
    if not sql or sql.isspace():
        raise ValueError("sql is empty")
    return sql


_PLAIN_PARAMS = frozenset({tuple, list, dict})  # the common case, checked without ABCs


def check_params(params: object) -> Params:
    """Accept a tuple/list/other sequence or a mapping of bindings.

    A str or bytes is refused: SQLite would bind it one character at a time.
    The types of the values themselves are left to apsw, whose TypeError names
    the offending argument.
    """
    if type(params) in _PLAIN_PARAMS:
        return params  # type: ignore[return-value]
    if params is None:
        return ()
    if isinstance(params, (str, bytes, bytearray, memoryview)) or not isinstance(
            params, (Sequence, Mapping)):
        raise TypeError(
            "params must be a sequence (tuple, list) or a mapping (dict), "
            f"not {type(params).__name__}")
    return params


_FROZEN = frozenset({int, float, str, bytes, type(None), bool})


def capture_params(params: object) -> Params:
    """Check ``params`` and copy them as they are now (for calls that return
    before the worker runs them: write-behind, the async door).

    The caller may reuse and change its list or dict meanwhile, so the
    container is copied, and every value that apsw would bind through the
    buffer protocol (``bytearray``, ``memoryview``, ``array.array``,
    ``mmap``...) is frozen into ``bytes``. Plain values (int, float, str,
    bytes, None) cost one type check each.
    """
    checked = check_params(params)
    if type(checked) is tuple:
        values: Iterable[Any] = checked
    elif isinstance(checked, Mapping):
        checked = dict(checked)
        values = checked.values()
    else:
        checked = tuple(checked)
        values = checked
    for value in values:
        if type(value) not in _FROZEN:
            return _freeze(checked)
    return checked


def capture_many(seq_of_params: object) -> list[Params]:
    """:func:`check_many`, each parameter set captured by :func:`capture_params`."""
    if isinstance(seq_of_params, (str, bytes)) or not isinstance(seq_of_params, Iterable):
        raise TypeError("seq_of_params must be an iterable of parameter sets, "
                        f"not {type(seq_of_params).__name__}")
    return [capture_params(p) for p in seq_of_params]


def _frozen(value: Any) -> Any:
    if type(value) in _FROZEN or isinstance(value, (str, bytes)):
        return value
    try:
        view = memoryview(value)  # anything apsw binds as a blob through the buffer protocol
    except TypeError:
        return value  # not a buffer: apsw binds it by value (or refuses it)
    with view:
        return view.tobytes()


def _freeze(params: Params) -> Params:
    if isinstance(params, dict):
        return {key: _frozen(value) for key, value in params.items()}
    return tuple(_frozen(value) for value in params)
