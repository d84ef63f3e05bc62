"""SlowSyncVFS: a fixed fsync cost over RAM, so that a benchmark controls what an fsync
costs instead of measuring whatever disk the machine has
(``python -m benchmarks.fsync_sweep``, and ``compare``'s cells given an
``fsync_delay_ms``; see the package docstring for how a shim is used).

Every xSync sleeps ``delay`` seconds (the GIL is released meanwhile, as during
a real fsync), then syncs the real file::

    vfs = SlowSyncVFS("slow-sync-1", delay=0.0002)     # 200 us per fsync
    directory = ram_directory()                        # /dev/shm when it exists
    db = Gateway(os.path.join(directory, "x.db"), vfs=vfs.name, synchronous="FULL")

``time.sleep`` may oversleep by tens of microseconds: ``vfs.slept`` over
``vfs.syncs`` is the mean cost an fsync really had; print it beside a figure.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from typing import Any

import apsw


def check_delay(delay: object) -> float:
    """``delay`` as a float number of seconds >= 0, or ValueError saying so."""
    if (not isinstance(delay, (int, float)) or isinstance(delay, bool)
            or not math.isfinite(delay) or delay < 0):
        raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")
    return float(delay)


RAM_DIR = "/dev/shm"  # tmpfs on Linux: writes and fsyncs cost no disk time


def ram_directory(prefix: str = "slow-sync-") -> str:
    """A new empty directory in RAM (under :data:`RAM_DIR`; the system's temp
    directory where that does not exist). The caller removes it."""
    parent = RAM_DIR if os.path.isdir(RAM_DIR) and os.access(RAM_DIR, os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=parent)


class _SlowSyncFile(apsw.VFSFile):
    def __init__(self, vfs: SlowSyncVFS, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)  # "": inherit from the default VFS
        self._vfs = vfs

    def xSync(self, flags: int) -> None:
        start = time.perf_counter()
        time.sleep(self._vfs.delay)  # the simulated disk's fsync: the point of this VFS
        super().xSync(flags)
        self._vfs._count(time.perf_counter() - start)


class SlowSyncVFS(apsw.VFS):
    """A VFS named ``name`` whose every xSync costs ``delay`` seconds (see the
    module docstring).

    Thread-safe: the counters are updated under one lock.

    Args:
        name: the name to register (pass it as ``vfs=`` to apsw or the Gateway).
        delay: seconds each xSync sleeps, >= 0 (0: the RAM directory's own cost).

    Raises:
        ValueError: ``delay`` is negative, not finite, or not a number.
    """

    def __init__(self, name: str, delay: float) -> None:
        self.delay = check_delay(delay)
        self.name = name
        self._lock = threading.Lock()  # guards syncs and slept
        self.syncs = 0      # xSync calls so far
        self.slept = 0.0    # seconds spent in them (the delay as really slept, plus the sync)
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> _SlowSyncFile:
        return _SlowSyncFile(self, name, flags)

    def xSleep(self, microseconds: int) -> int:
        # SQLite's busy handler sleeps through the VFS. The inherited xSleep
        # sleeps with the GIL held: every other thread stopped with it, the
        # lock holder too, and per-thread connections (busy) fell to ~1 op/s
        # at 32 threads. time.sleep lets the others run, as a real sleep does.
        time.sleep(microseconds / 1_000_000)
        return microseconds

    def _count(self, seconds: float) -> None:
        with self._lock:
            self.syncs += 1
            self.slept += seconds
