"""The gateway's own exceptions.

::

    Exception
     +-- GatewayError                 base of every error the gateway itself raises
          +-- GatewayClosed           the gateway accepts no work (closed, broken, forked)
          +-- Overloaded              the queue is full; nothing was enqueued
          +-- RequestTimeout          the caller stopped waiting (also a TimeoutError)
          +-- TransactionControlError BEGIN/COMMIT/SAVEPOINT/... in a caller's SQL
          +-- ConnectionSettingError  a PRAGMA or ATTACH that would change a shared connection
          +-- NestedCallError         a gateway call made from inside a transaction fn
          +-- WriteBlockExpired       a write block held the writer past its hold limit

Each is exported by :mod:`sqlite_gateway`. Options out of range raise
``ValueError`` or ``TypeError`` when the gateway is made, and input of the
wrong kind (``sql``, ``params``, ``priority``, ``timeout``) raises them at the
call, before anything is queued.

Errors raised by SQLite itself are *not* wrapped: an ``apsw.ConstraintError``
raised on the worker reaches the caller as that same object, with the
worker-side frames in its traceback.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of the errors raised by the gateway itself."""


class GatewayClosed(GatewayError):
    """The gateway does not accept work: it was closed, its worker died or
    hung, or this is a forked child of the process that started it.

    ``reason`` says which, for logs and error pages.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Overloaded(GatewayError):
    """The request queue is full, so the request was refused at once.

    Nothing was enqueued; retrying later is safe.
    """

    def __init__(self, queue_size: int) -> None:
        super().__init__(
            f"gateway queue is full ({queue_size} requests waiting); "
            "the request was not accepted, retry later"
        )
        self.queue_size = queue_size


class RequestTimeout(GatewayError, TimeoutError):
    """The caller stopped waiting for its answer.

    If the request had not started it will never run. If it had started it
    may still commit, unless ``interrupted``: its running SQL statement was
    then stopped (``Connection.interrupt()``, or the caller's deadline in
    place) and it failed, so nothing of it is committed. An interrupt that
    missed (a statement just finishing) is not reported as one: the caller
    waits briefly for the answer that says which, and gets the committed
    result if it came.
    """

    def __init__(self, timeout: float, started: bool, interrupted: bool = False) -> None:
        if interrupted:
            state = "its running statement was interrupted: nothing of it was committed"
        elif started:
            state = "it had started and may still commit"
        else:
            state = "it had not started and will not run"
        super().__init__(f"no answer within {timeout:g} s; {state}")
        self.timeout = timeout
        self.started = started
        self.interrupted = interrupted


class TransactionControlError(GatewayError):
    """Explicit transaction control was given to ``execute()``.

    Every call already runs atomically inside the gateway's own transaction;
    statements that must commit together belong in ``Gateway.transaction(fn)``.
    """


class ConnectionSettingError(GatewayError):
    """A PRAGMA or ATTACH would change a connection every later caller shares.

    ``synchronous``, ``busy_timeout``, ``journal_mode``, ``foreign_keys``,
    ``query_only`` and the like would change every later caller's writes (or
    stop them all); the options of :class:`~sqlite_gateway.Gateway` set them.
    ``hard_heap_limit``, ``soft_heap_limit`` and ``temp_store_directory``
    would change every SQLite connection in the process; ``case_sensitive_like``,
    ``recursive_triggers``, ``cache_size``, ``mmap_size`` and their kin the
    results or resources of later callers; an ATTACHed database would stay
    attached. Reading such a PRAGMA (``PRAGMA synchronous``) is fine, and
    ``run_exclusive(fn)`` gets the raw connection for tuning it once.
    """


class NestedCallError(GatewayError):
    """A gateway method was called from inside a transaction fn.

    The fn runs on the writer (the worker thread, or its caller's thread when
    the call ran in place) and holds it: waiting there for another call would
    deadlock, the writer waiting for itself. Use the ``conn`` handle
    (:class:`~sqlite_gateway.Connection`) that the fn receives instead.
    """


class WriteBlockExpired(GatewayError, TimeoutError):
    """A write block (``Gateway.writer()``) held the writer past ``hold_limit``.

    The block was rolled back: nothing of it is kept. Raised at the holder's
    next statement on the block, or when it leaves the ``with``; a statement
    running when the limit passed was interrupted. Keep slow work (network
    calls, user input) outside the block, or raise the ``hold_limit`` option.
    """

    def __init__(self, limit: float) -> None:
        super().__init__(
            f"the write block held the writer longer than its hold limit ({limit:g} s) and "
            "was rolled back; nothing of it was kept. Do slow work outside the block, or "
            "raise the hold_limit option")
        self.limit = limit
