"""FaultVFS: an apsw VFS shim whose files fail reads, writes, syncs or opens on demand.

The fault tests, ``python -m benchmarks.faults`` and the history checker open
their gateways through it (see the package docstring for how a shim is used).

Each file it opens asks the shared :class:`Faults` switches before every xRead, xWrite and xSync,
and raises ``apsw.IOError`` (SQLite's SQLITE_IOERR) while one is armed::

    vfs = FaultVFS("faulty-1")
    db = Gateway(path, vfs=vfs.name)
    vfs.faults.arm(syncs=1, only="-wal")   # the next fsync of the WAL fails
    ...
    vfs.faults.off()
    vfs.unregister()                        # after every connection is closed

Two more switches, for a disk that is slow or gone rather than failing once:

- ``faults.sync_delay = 0.003``: every xSync sleeps that long first (a COMMIT at
  ``synchronous=FULL`` syncs the WAL, so a caller's deadline can land inside it);
- ``faults.refuse_opens = True``: every xOpen raises ``apsw.CantOpenError`` (a
  connection that must reopen after an I/O error cannot).

``faults.reset()`` turns all of them off at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import apsw

from .slow_sync import check_delay

ALWAYS = 1 << 62  # "until switched off"


class Faults:
    """Switches shared by every file of one VFS. Thread-safe (one lock).

    ``sync_delay`` (seconds each xSync sleeps first; ValueError unless a number
    >= 0) and ``refuse_opens`` (every xOpen fails) are plain attributes: each
    file reads them once per call, so a change applies from the next call on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _left, _only and injected
        self._left: Counter[str] = Counter()
        self._only = ""
        self._sync_delay = 0.0
        self.refuse_opens = False
        # Failures raised so far, by operation ("read", "write", "sync", "open").
        self.injected: Counter[str] = Counter()

    @property
    def sync_delay(self) -> float:
        return self._sync_delay

    @sync_delay.setter
    def sync_delay(self, delay: float) -> None:
        self._sync_delay = check_delay(delay)  # checked here, not inside SQLite's xSync

    def arm(self, *, reads: int = 0, writes: int = 0, syncs: int = 0, only: str = "") -> None:
        """Fail the next N reads / writes / syncs (ALWAYS: until ``off()``).

        ``only`` limits them to files whose name ends with it ("-wal", ".db").
        """
        with self._lock:
            self._left = Counter(read=reads, write=writes, sync=syncs)
            self._only = only

    def off(self) -> None:
        """Disarm the armed reads / writes / syncs (the other switches stay)."""
        with self._lock:
            self._left.clear()

    def reset(self) -> None:
        """A healthy disk again: nothing armed, no sync delay, opens allowed
        (``injected`` keeps its counts)."""
        self.off()
        self.sync_delay = 0.0
        self.refuse_opens = False

    def check(self, op: str, filename: str) -> None:
        """Raise ``apsw.IOError`` if a failure of ``op`` on ``filename`` is armed."""
        with self._lock:
            if self._left[op] <= 0 or not filename.endswith(self._only):
                return
            self._left[op] -= 1
            self.injected[op] += 1
        raise apsw.IOError(f"injected {op} failure on {filename}")


    def check_open(self) -> None:
        """Raise ``apsw.CantOpenError`` while ``refuse_opens`` is set."""
        if not self.refuse_opens:
            return
        with self._lock:
            self.injected["open"] += 1
        raise apsw.CantOpenError("injected: the file cannot be opened")


class _FaultFile(apsw.VFSFile):
    def __init__(self, vfs: FaultVFS, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)  # "": inherit from the default VFS
        self._faults = vfs.faults
        self._name = name if isinstance(name, str) else name.filename()

    def xRead(self, amount: int, offset: int) -> bytes:
        self._faults.check("read", self._name)
        return super().xRead(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:
        self._faults.check("write", self._name)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        delay = self._faults.sync_delay
        if delay:
            time.sleep(delay)  # a slow disk: the GIL is released, as in a real fsync
        self._faults.check("sync", self._name)
        super().xSync(flags)


class FaultVFS(apsw.VFS):
    """A VFS named ``name`` whose files fail on demand (see :class:`Faults`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = Faults()
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> _FaultFile:
        self.faults.check_open()
        return _FaultFile(self, name, flags)
