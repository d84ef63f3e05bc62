"""Other users of a gateway's database file inside this process, looked for at start.

Two things in one process can break what the gateway promises, and neither is
visible to SQLite itself:

- **A second copy of SQLite** (the stdlib ``sqlite3`` module beside apsw) on the
  same file. POSIX locks belong to the process, not to a connection, so the two
  copies do not see each other's locks, and closing one copy's descriptor drops
  the other's: reads saw "database disk image is malformed" in 3 of 4 runs here.
  From another process it is safe.
- **A second running Gateway** on the same file: two writers in one process
  contend for the write lock (callers wait up to the busy timeout) and split
  group commit in two. Share one gateway per file per process.

:func:`warn_if_shared` looks for both when a gateway starts. The first, which
can corrupt the file, is a :class:`SharedFileWarning`; a warning, not an error,
because a descriptor cannot be traced to the library that opened it (your own
apsw connection is safe, and some libraries import ``sqlite3`` for their own
files). The second is only slower than it should be, and sometimes meant (a
test, a gateway replacing a broken one): it is logged at WARNING on the
``sqlite_gateway.samefile`` logger. Opt out of the warning with the standard
filter::

    import warnings
    from sqlite_gateway.samefile import SharedFileWarning
    warnings.filterwarnings("ignore", category=SharedFileWarning)

Not detected: a ``sqlite3`` connection opened *after* the gateway started, or
on Linux-less systems (no ``/proc/self/fd``) any descriptor at all.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Protocol

__all__ = ["SharedFileWarning", "warn_if_shared"]

logger = logging.getLogger(__name__)


class SharedFileWarning(RuntimeWarning):
    """Something else in this process has the gateway's database file open."""


class _Gateway(Protocol):
    path: str

    @property
    def state(self) -> object: ...


def warn_if_shared(path: str, me: object, gateways: Iterable[_Gateway]) -> None:
    """Warn if ``path`` is open elsewhere in this process: :class:`SharedFileWarning` for
    a second copy of SQLite, a WARNING log for a second running gateway.

    Call before ``me`` opens the file. ``gateways`` are this process's open
    gateways (``me`` may be among them). Thread-safe; reads ``/proc/self/fd``.
    """
    mine = _identities(path)
    if not mine:
        return  # the file does not exist yet: nobody has it open
    others = [g for g in gateways if g is not me and _identities(g.path) & mine]
    running = [g for g in others if getattr(g.state, "value", None) == "running"]
    if running:
        logger.warning(
            "another Gateway in this process already has %s open (%r): two gateways on one "
            "file contend for its write lock (callers wait up to busy_timeout) and each "
            "commits its own groups; share one gateway per file per process", path, running[0])
        return
    if others or "_sqlite3" not in sys.modules:
        return  # the descriptors are our own gateways', or no second SQLite is loaded
    held = _descriptors_on(mine)
    if held:
        warnings.warn(
            f"{path} is already open in this process ({len(held)} file descriptor(s) not "
            "the gateway's) and the stdlib sqlite3 module is loaded: if that is a sqlite3 "
            "connection, its copy of SQLite does not see the gateway's locks (they are per "
            "process, and closing its descriptor drops the gateway's), which can corrupt "
            "the database ('database disk image is malformed'). Use the gateway for every "
            "access in this process, or open the file from another process",
            SharedFileWarning, stacklevel=4)


def _identities(path: str) -> set[tuple[int, int]]:
    """(device, inode) of the database file and of its -wal and -shm, those that exist."""
    found = set()
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            st = os.stat(name)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _descriptors_on(files: set[tuple[int, int]]) -> list[int]:
    """This process's descriptors open on any of ``files`` (Linux; [] elsewhere)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return []
    held = []
    for name in fds:
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile, or the listing's own descriptor
            continue
        if (st.st_dev, st.st_ino) in files:
            held.append(int(name))
    return held
