"""The gateway's options, defined once: names, defaults, checks and meaning.

:class:`Options` is what ``Gateway(path, **options)`` builds from its keyword
arguments, what the benchmarks' baselines (``benchmarks/baselines.py``) read their own
subset from, and what the framework integrations list as config keys
(:mod:`sqlite_gateway.integrations.settings` reads its fields). A new option is
added here, and only here, to become a keyword of every gateway class and a
config key of every integration.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

import apsw

from .connection import SYNCHRONOUS

READ_MODES = ("inline", "threads")


class _Default(enum.Enum):
    DEFAULT = "the gateway's timeout"


DEFAULT = _Default.DEFAULT
"""A call's ``timeout`` when none is given: the gateway's own ``timeout`` option."""
Timeout = Union[float, None, Literal[_Default.DEFAULT]]
"""A call's ``timeout``: seconds, None (no limit), or DEFAULT."""


@dataclass(frozen=True)
class Options:
    """A gateway's keyword options, checked when made; immutable.

    ``Options()`` holds the defaults. Every gateway class takes them as keyword
    arguments (``Gateway(path, queue_size=100)``) or as one value
    (``Gateway(path, Options(queue_size=100))``); a keyword given beside an
    ``Options`` overrides that field.

    Attributes:
        queue_size: most requests waiting at once; past it calls raise
            :class:`~sqlite_gateway.Overloaded` at once.
        batch_max: most requests committed together in one transaction.
        timeout: default seconds a caller waits for its answer (None: no
            limit). Each call can override it.
        synchronous: ``"FULL"`` (an answer means durable, even on power loss),
            ``"NORMAL"`` (survives an application crash; the last commits may
            be lost on power loss), ``"OFF"`` or ``"EXTRA"``; any case, kept
            upper case.
        busy_timeout: seconds the writer waits for a lock held by another
            process before the batch fails with ``apsw.BusyError`` (0: no wait).
        readers: the most read-only connections that serve ``execute()``
            calls whose statements cannot write (as SQLite judges them),
            beside the writer; opened as needed, shared by every thread.
            0 sends every statement through the one writer.
        read_mode: ``"inline"`` (a thread takes a free reader, reads in
            place, no hand-off, and gives it back; with more threads reading
            at once than ``readers``, the others wait for a free one) or
            ``"threads"`` (``readers`` threads, each owning a connection,
            fed by a queue: for callers that must not block).
        vfs: the name of a registered SQLite VFS for every connection the
            gateway opens (None: SQLite's default).
        hang_timeout: seconds one step of the worker (a statement, a
            transaction or exclusive fn, a COMMIT) may run. Past it the
            running SQL is interrupted (the request fails with
            ``apsw.InterruptError``); if the step still has not ended about a
            second later (a Python fn that never returns), the gateway is
            broken: every waiting and later call raises GatewayClosed, and
            the stuck thread keeps the write lock until the process exits.
            A read on a reader is stopped the same way past it.
            Must exceed ``busy_timeout`` (waiting for a lock is not a hang);
            None: no watchdog.
        background_slice: seconds background work may hold the writer at a
            time: a background batch takes no more requests once it has run
            that long, and ``bulk()`` cuts its rows into requests of about
            that length. Interactive work waits at most about this long
            behind background work.
        autocheckpoint: the writer's ``wal_autocheckpoint``: after a commit
            that leaves at least this many pages in the WAL, the writer runs a
            PASSIVE checkpoint (SQLite's default, 1000). 0 switches it off:
            use 0 beside Litestream, which then owns checkpointing (and the
            WAL grows until something checkpoints).
        inline: when True (the default) and the writer is idle with nothing
            queued, a synchronous write call runs in its caller's thread,
            under the writer's lock, with every step the worker would take:
            no thread hand-off (the main thread never does: Ctrl-C must not
            land in a COMMIT). Under load every call goes through the worker.
            A transaction fn run in place delays only its own caller if it
            keeps running Python past its timeout; its SQL is still stopped
            at the deadline.
        hold_limit: seconds a write block (``Gateway.writer()``) may hold the
            writer. Past it the block is rolled back, a statement it is
            running is interrupted, and its holder gets
            :class:`~sqlite_gateway.WriteBlockExpired` at its next statement
            or when it leaves the ``with``. Every other caller waits behind a
            held block, so keep it short. With a watchdog it is capped at half
            of ``hang_timeout`` (a block is never mistaken for a hang).
        connection_setup: a function called with each SQLite connection the gateway
            opens (``apsw.Connection``): the writer, every reader (opened as
            needed, in whichever thread needs one), and the writer again
            whenever it is reopened after an I/O error. For what every
            connection must have: SQL functions, collations, aggregates
            (``conn.create_scalar_function(...)``). It runs after the
            gateway's own configuration, with its guard on (transaction
            control and the settings the gateway owns are refused). It must
            not close the connection, replace its authorizer or keep it. If
            it raises, ``start()`` raises that error and nothing stays open.
            None: nothing is called.
        process_lock: when True, the writer holds an exclusive ``flock`` on
            ``<database>-gateway.lock`` from before BEGIN until COMMIT
            returns, so the writers of one file in several processes (a
            pre-forking server's workers) queue in the kernel and wake as
            soon as the lock is free, instead of sleeping in SQLite's busy
            handler; each keeps its own group commit, and (on 64-bit Linux) a
            writer that has just committed lets a waiting process go first.
            A process that dies drops its lock (the kernel does). The wait
            is bounded by ``busy_timeout``, then SQLite's own locking
            applies. Default: see the ``process_lock`` field (chosen by
            measurement, docs/benchmarks-perf.md). Ignored where ``fcntl``
            does not exist (Windows).

    Raises:
        ValueError: a value out of range or of the wrong type (the message
            starts with the option's name).
        TypeError: an unknown option name.
    """

    queue_size: int = 10_000
    batch_max: int = 256
    timeout: float | None = 30.0
    synchronous: str = "FULL"
    busy_timeout: float = 5.0
    readers: int = 8
    read_mode: str = "inline"
    vfs: str | None = None
    hang_timeout: float | None = 60.0
    background_slice: float = 0.01
    autocheckpoint: int = 1000
    inline: bool = True
    hold_limit: float = 5.0
    connection_setup: Callable[[apsw.Connection], object] | None = None
    process_lock: bool = True

    def __post_init__(self) -> None:
        _whole("queue_size", self.queue_size, 1)
        _whole("batch_max", self.batch_max, 1)
        if self.timeout is not None:
            check_seconds("timeout", self.timeout, most=threading.TIMEOUT_MAX)
        # SQLite takes the busy timeout in milliseconds, as a C int.
        check_seconds("busy_timeout", self.busy_timeout, zero_ok=True, most=_BUSY_MAX)
        check_seconds("background_slice", self.background_slice)
        check_seconds("hold_limit", self.hold_limit)
        if self.connection_setup is not None and not callable(self.connection_setup):
            raise ValueError("connection_setup must be a function taking an apsw.Connection "
                             f"(or None), not {self.connection_setup!r}")
        _whole("readers", self.readers, 0)
        if (not isinstance(self.autocheckpoint, int) or isinstance(self.autocheckpoint, bool)
                or self.autocheckpoint < 0):
            raise ValueError("autocheckpoint must be a whole number of WAL pages >= 0 "
                             f"(0: off), not {self.autocheckpoint!r}")
        if not isinstance(self.inline, bool):
            raise ValueError(f"inline must be True or False, not {self.inline!r}")
        if not isinstance(self.process_lock, bool):
            raise ValueError(f"process_lock must be True or False, not {self.process_lock!r}")
        if self.read_mode not in READ_MODES:
            raise ValueError(f"read_mode must be 'inline' or 'threads', not {self.read_mode!r}")
        if not isinstance(self.synchronous, str) or self.synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, "
                             f"not {self.synchronous!r}")
        vfs = self.vfs
        if vfs is not None and (not isinstance(vfs, str) or vfs not in apsw.vfs_names()):
            raise ValueError(f"vfs must name a registered SQLite VFS "
                             f"({', '.join(apsw.vfs_names())}), not {vfs!r}")
        if self.hang_timeout is not None:
            check_seconds("hang_timeout", self.hang_timeout)
            if self.hang_timeout <= self.busy_timeout:
                raise ValueError(f"hang_timeout ({self.hang_timeout!r} s) must exceed "
                                 f"busy_timeout ({self.busy_timeout!r} s): waiting for a "
                                 "lock is not a hang")
        # Normalised once here, so every reader of the options sees one spelling.
        object.__setattr__(self, "synchronous", self.synchronous.upper())
        object.__setattr__(self, "background_slice", float(self.background_slice))
        object.__setattr__(self, "hold_limit", float(self.hold_limit))

    @classmethod
    def build(cls, options: Options | None = None,
              overrides: Mapping[str, Any] | None = None) -> Options:
        """``options`` (default: the defaults) with ``overrides`` applied, checked.

        Raises:
            TypeError: ``options`` is not an Options, or an override names no option.
            ValueError: a value is out of range.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, Options):
            raise TypeError(f"options must be an Options, not {type(options).__name__}")
        if not overrides:
            return options
        unknown = set(overrides) - NAMES
        if unknown:
            raise TypeError(f"unknown gateway options: {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(NAMES_IN_ORDER)})")
        return dataclasses.replace(options, **overrides)


NAMES_IN_ORDER: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Options))
NAMES = frozenset(NAMES_IN_ORDER)


def check_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """The database path as a str, or ValueError for what the gateway cannot open.

    A bytes path is decoded as the OS does (``os.fsdecode``). ``:memory:`` and
    empty paths are refused (the gateway needs WAL, which needs a file), and so
    are URI file names: SQLite would take ``file:x.db?mode=ro`` as a plain file
    name here, and the gateway opens its connections in the modes it needs itself.

    Raises:
        TypeError: not a str, bytes or path object.
        ValueError: a path the gateway cannot open (the message says why).
    """
    path = os.fsdecode(path)
    try:
        path.encode("utf-8")  # SQLite takes UTF-8 file names
    except UnicodeEncodeError:
        raise ValueError(f"path {path!r} is not valid in this system's file name encoding "
                         f"({sys.getfilesystemencoding()}): SQLite needs a name it can "
                         "pass as UTF-8") from None
    if not path or path == ":memory:":
        raise ValueError(f"path must name a database file, not {path!r} "
                         "(the gateway needs WAL, which needs a file)")
    if path[:5].lower() == "file:":
        raise ValueError(f"URI file names are not supported, not {path!r}: pass a plain "
                         "path (the gateway opens the writer read-write and its readers "
                         "read-only itself); for a file whose name starts with 'file:', "
                         "write './file:...'")
    return path


def _whole(name: str, value: object, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, not {value!r}")


def check_seconds(name: str, value: object, zero_ok: bool = False,
                  most: float = math.inf) -> float:
    """``value`` as float seconds, or ValueError naming ``name``: a finite number
    > 0 (>= 0 with ``zero_ok``), at most ``most``; NaN, infinity and bools are refused."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 <= value < math.inf or (value == 0 and not zero_ok)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, not {value!r}")
    if value > most:
        raise ValueError(f"{name} must be at most {most:.0f} s (the longest wait the "
                         f"platform can time), not {value!r}; use None for no limit "
                         "where the option allows it")
    return float(value)


_BUSY_MAX = (2**31 - 1) / 1000  # seconds: SQLite's busy timeout is a C int of milliseconds
