"""An apsw VFS shim for the history checker: slow syncs, I/O errors, refused opens.

Every file opened through :class:`ShimVFS` is SQLite's default file; before each
xRead, xWrite and xSync it asks the shared :class:`Switches`:

- ``sync_delay``: seconds every xSync sleeps first (a COMMIT at
  ``synchronous=FULL`` syncs the WAL, so a caller's deadline can land inside it);
- ``arm(reads=, writes=, syncs=)``: the next N of each raise ``apsw.IOError``
  (SQLite's SQLITE_IOERR), as a failing disk would;
- ``refuse_opens``: every xOpen raises ``apsw.CantOpenError`` (a connection that
  must reopen after an I/O error cannot: the gateway's worker then dies).

One VFS per process is enough: :func:`shim` registers it once and hands it out.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import apsw

NAME = "history-shim"


class Switches:
    """What the files of one VFS do wrong now. Thread-safe: ``_lock`` guards all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left: Counter[str] = Counter()
        self.sync_delay = 0.0
        self.refuse_opens = False
        self.injected: Counter[str] = Counter()  # faults raised so far, by operation

    def arm(self, *, reads: int = 0, writes: int = 0, syncs: int = 0) -> None:
        """Fail the next ``reads`` reads, ``writes`` writes and ``syncs`` syncs."""
        with self._lock:
            self._left = Counter(read=reads, write=writes, sync=syncs)

    def reset(self) -> None:
        """Everything back to a healthy disk (the ``injected`` counts are kept)."""
        with self._lock:
            self._left.clear()
            self.sync_delay = 0.0
            self.refuse_opens = False

    def check(self, op: str, filename: str) -> None:
        """Raise ``apsw.IOError`` if a failure of ``op`` is armed."""
        if op == "sync" and self.sync_delay:
            time.sleep(self.sync_delay)
        with self._lock:
            if self._left[op] <= 0:
                return
            self._left[op] -= 1
            self.injected[op] += 1
        raise apsw.IOError(f"injected {op} failure on {filename}")


class _ShimFile(apsw.VFSFile):
    def __init__(self, switches: Switches, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)  # "": every method from the default VFS
        self._switches = switches
        self._name = name if isinstance(name, str) else name.filename()

    def xRead(self, amount: int, offset: int) -> bytes:
        self._switches.check("read", self._name)
        return super().xRead(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:
        self._switches.check("write", self._name)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self._switches.check("sync", self._name)
        super().xSync(flags)


class ShimVFS(apsw.VFS):
    """The VFS named :data:`NAME`; its files obey :attr:`switches`."""

    def __init__(self) -> None:
        self.name = NAME
        self.switches = Switches()
        super().__init__(NAME, "")

    def xOpen(self, name: Any, flags: list[int]) -> _ShimFile:
        if self.switches.refuse_opens:
            self.switches.injected["open"] += 1
            raise apsw.CantOpenError("injected: the file cannot be opened")
        return _ShimFile(self.switches, name, flags)


_shim: ShimVFS | None = None
_shim_lock = threading.Lock()


def shim() -> ShimVFS:
    """The process's one :class:`ShimVFS`, registered on first use."""
    global _shim
    with _shim_lock:
        if _shim is None:
            _shim = ShimVFS()
        return _shim
