"""An apsw VFS shim that fails reads, writes or syncs on demand, for fault tests.

``FaultVFS`` inherits everything from SQLite's default VFS; each file it opens
asks the shared :class:`Faults` switches before every xRead, xWrite and xSync,
and raises ``apsw.IOError`` (SQLite's SQLITE_IOERR) while one is armed::

    vfs = FaultVFS("faulty-1")
    db = Gateway(path, vfs=vfs.name)
    vfs.faults.arm(syncs=1, only="-wal")   # the next fsync of the WAL fails
    ...
    vfs.faults.off()
    vfs.unregister()                        # after every connection is closed
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import apsw

ALWAYS = 1 << 62  # "until switched off"


class Faults:
    """Switches shared by every file of one VFS. Thread-safe (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _left, _only and injected
        self._left: Counter[str] = Counter()
        self._only = ""
        self.injected: Counter[str] = Counter()  # failures raised so far, by operation

    def arm(self, *, reads: int = 0, writes: int = 0, syncs: int = 0, only: str = "") -> None:
        """Fail the next N reads / writes / syncs (ALWAYS: until ``off()``).

        ``only`` limits them to files whose name ends with it ("-wal", ".db").
        """
        with self._lock:
            self._left = Counter(read=reads, write=writes, sync=syncs)
            self._only = only

    def off(self) -> None:
        with self._lock:
            self._left.clear()

    def check(self, op: str, filename: str) -> None:
        with self._lock:
            if self._left[op] <= 0 or not filename.endswith(self._only):
                return
            self._left[op] -= 1
            self.injected[op] += 1
        raise apsw.IOError(f"injected {op} failure on {filename}")


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
        self._faults.check("sync", self._name)
        super().xSync(flags)


class FaultVFS(apsw.VFS):
    """A VFS named ``name`` whose files fail on demand (see :class:`Faults`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = Faults()
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> _FaultFile:
        return _FaultFile(self, name, flags)
