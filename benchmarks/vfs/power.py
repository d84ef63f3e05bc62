"""PowerVFS: power loss as SQLite's own crash tests model it (the power-loss tests and
``python -m benchmarks.power_loss``; see the package docstring for how a shim is used).

Every file SQLite opens through :class:`PowerVFS` is written through to the
real file, so SQLite works as usual. Beside that, the VFS keeps, for each file
(the database, its ``-wal``, a ``-journal``), the image that is durable (as of
that file's last xSync) apart from the writes and truncates made since. A
simulated power cut (:meth:`PowerVFS.power_cut`) freezes every later write,
truncate, sync and delete, and returns a :class:`Cut`: what the disk held at
that instant. :meth:`Cut.materialise` then writes the file set that survived
into another directory:

- ``"drop"``: every unsynced write and truncate is lost;
- ``"torn"``: each unsynced write survives sector by sector (``sector`` bytes,
  aligned to the file), each unit kept or lost at random, and each unsynced
  truncate kept or lost at random: torn and reordered writes (a later write
  to a sector may be lost while an earlier one survives).

What the model assumes (as SQLite's ``src/test6.c`` crash VFS does):

- a delete is durable at once;
- a file created since the last sync of its directory survives only once it
  has been synced itself (``"drop"``), or by chance (``"torn"``); a file that
  existed before this VFS first opened it counts as durable as it was found;
- the ``-shm`` WAL index is not a file on the disk that matters: it is never
  written through xWrite and is rebuilt from the WAL by the next opener, so a
  cut never carries it over (it is lost);
- writes never change bytes outside their own range (SQLite's unix VFS claims
  powersafe overwrite), so a lost unit keeps its old bytes, never garbage.

Use::

    vfs = PowerVFS("power-1")
    conn = apsw.Connection(path, vfs=vfs.name)   # or Gateway(path, vfs=vfs.name)
    ...
    cut = vfs.power_cut()                        # every later write now blocks
    cut.materialise(path, other_dir + "/x.db", "torn", random.Random(1))

Blocked writers stay blocked until :meth:`PowerVFS.resume` (tests that must
close their connections afterwards) or the process exits (a campaign child).
The real files keep everything written before the cut; only the materialised
copy shows what survived.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

T = TypeVar("T")
MODES = ("drop", "torn")
# The files that make up one database on disk; the -shm is deliberately absent.
DURABLE_SUFFIXES = ("", "-wal", "-journal")


class _FileState:
    """One path's durable image and the changes made to it since its last sync."""

    __slots__ = ("durable", "pending")

    def __init__(self, durable: bytes | None) -> None:
        self.durable = durable  # None: the file does not durably exist
        # In order: (offset, bytes) for a write, (size, None) for a truncate.
        self.pending: list[tuple[int, bytes | None]] = []

    def synced(self) -> None:
        self.durable = bytes(_apply(self.durable or b"", self.pending))
        self.pending = []


def _apply(image: bytes, ops: list[tuple[int, bytes | None]]) -> bytearray:
    out = bytearray(image)
    for offset, data in ops:
        _apply_one(out, offset, data)
    return out


def _apply_one(out: bytearray, offset: int, data: bytes | None) -> None:
    if data is None:  # a truncate (or an extension, which reads back as zeros)
        if offset < len(out):
            del out[offset:]
        else:
            out.extend(bytes(offset - len(out)))
        return
    end = offset + len(data)
    if end > len(out):
        out.extend(bytes(end - len(out)))
    out[offset:end] = data


class Cut:
    """What the disk held at the instant of a power cut, per path.

    ``files`` maps a full path to (durable image or None, unsynced changes).
    Paths that this VFS never wrote are read from the disk when materialised
    (nothing of them was pending).
    """

    def __init__(self, files: dict[str, tuple[bytes | None, list[tuple[int, bytes | None]]]],
                 value: object = None) -> None:
        self.files = files
        self.value = value  # what power_cut's ``at_cut`` returned
        self.pending_writes = sum(len(ops) for _, ops in files.values())

    def survivor(self, path: str, mode: str, rng: random.Random,
                 sector: int = 512) -> bytes | None:
        """The image of ``path`` after the cut under ``mode`` (None: no file)."""
        path = os.path.realpath(path)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if sector < 1:
            raise ValueError(f"sector must be >= 1 byte, not {sector!r}")
        if path not in self.files:
            if not os.path.exists(path):
                return None
            with open(path, "rb") as f:
                return f.read()
        durable, pending = self.files[path]
        if mode == "drop" or not pending:
            return durable
        if durable is None and rng.random() < 0.5:
            return None  # created since the last sync: its directory entry was lost
        out = bytearray(durable or b"")
        for offset, data in pending:
            if data is None:
                if rng.random() < 0.5:
                    _apply_one(out, offset, None)
                continue
            start = offset
            end = offset + len(data)
            while start < end:
                unit_end = min(end, (start // sector + 1) * sector)
                if rng.random() < 0.5:
                    _apply_one(out, start, data[start - offset:unit_end - offset])
                start = unit_end
        return bytes(out)

    def materialise(self, db_path: str, new_db_path: str, mode: str, rng: random.Random,
                    sector: int = 512) -> list[str]:
        """Write the surviving file set of ``db_path`` (db, -wal, -journal) as
        ``new_db_path`` (+ suffixes); never a -shm. Returns the paths written."""
        written = []
        for suffix in DURABLE_SUFFIXES:
            image = self.survivor(db_path + suffix, mode, rng, sector)
            target = new_db_path + suffix
            if os.path.exists(target):
                os.remove(target)
            if image is not None:
                with open(target, "wb") as f:
                    f.write(image)
                written.append(target)
        if os.path.exists(new_db_path + "-shm"):
            os.remove(new_db_path + "-shm")
        return written


class _PowerFile(apsw.VFSFile):
    def __init__(self, vfs: PowerVFS, name: Any, flags: list[int], path: str | None) -> None:
        super().__init__("", name, flags)  # "": inherit from the default VFS
        self._vfs = vfs
        self._path = path

    def xWrite(self, data: bytes, offset: int) -> None:
        def write() -> None:
            super(_PowerFile, self).xWrite(data, offset)
            self._vfs._pending(self._path, offset, bytes(data))
        self._vfs._mutate(write)

    def xTruncate(self, newsize: int) -> None:
        def truncate() -> None:
            super(_PowerFile, self).xTruncate(newsize)
            self._vfs._pending(self._path, newsize, None)
        self._vfs._mutate(truncate)

    def xSync(self, flags: int) -> None:
        def sync() -> None:
            if self._vfs.real_syncs:
                super(_PowerFile, self).xSync(flags)
            self._vfs._synced(self._path)
        self._vfs._mutate(sync)


class PowerVFS(apsw.VFS):
    """A VFS named ``name`` that remembers what is durable (see the module docstring).

    Thread-safe: one lock guards the per-path states and is held across each
    write-through, so a cut sees the real files and the states agree.

    Args:
        name: the name to register (pass it as ``vfs=`` to apsw or the Gateway).
        ignore_syncs: a broken disk that acknowledges syncs and keeps nothing:
            syncs never make anything durable (to show that a campaign notices).
        real_syncs: also fsync the real files (off: the simulation does not
            need it, and a campaign runs faster without).
    """

    def __init__(self, name: str, *, ignore_syncs: bool = False,
                 real_syncs: bool = False) -> None:
        self.name = name
        self.ignore_syncs = ignore_syncs
        self.real_syncs = real_syncs
        # _lock guards _files and is held during each write, truncate, sync and
        # delete (including the real file's), and while a cut is taken.
        self._lock = threading.Lock()
        self._files: dict[str, _FileState] = {}
        self._power = threading.Event()  # set while the power is on
        self._power.set()
        self.syncs = 0  # syncs seen (a campaign reports them)
        self._armed: tuple[int, Callable[[], object] | None] | None = None  # (ops left, at_cut)
        self._cut: Cut | None = None  # the last cut taken
        self._cut_done = threading.Event()
        super().__init__(name, "")

    # -- what SQLite calls ----------------------------------------------------

    def xOpen(self, name: Any, flags: list[int]) -> _PowerFile:
        path = None if name is None else os.path.realpath(
            name if isinstance(name, str) else name.filename())
        if path is not None:
            # Before the real open creates it: did the file exist (durably)?
            self._mutate(lambda: self._track(path))
        return _PowerFile(self, name, flags, path)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        def delete() -> None:
            super(PowerVFS, self).xDelete(filename, syncdir)
            self._files[os.path.realpath(filename)] = _FileState(None)  # durable at once
        self._mutate(delete)

    # -- the simulation ---------------------------------------------------------

    def power_cut(self, at_cut: Callable[[], object] | None = None) -> Cut:
        """Cut the power now: from here every write, truncate, sync and delete
        through this VFS blocks (until :meth:`resume`). Returns what the disk
        held at this instant. ``at_cut()``, if given, runs at that same instant
        (e.g. to copy the list of acknowledged writes) and its value is
        ``Cut.value``."""
        with self._lock:
            return self._cut_now(at_cut)

    def _cut_now(self, at_cut: Callable[[], object] | None) -> Cut:
        """Called with _lock held."""
        self._power.clear()
        self._armed = None
        files = {path: (state.durable, list(state.pending))
                 for path, state in self._files.items()}
        self._cut = Cut(files, at_cut() if at_cut is not None else None)
        self._cut_done.set()
        return self._cut

    def arm(self, ops: int, at_cut: Callable[[], object] | None = None) -> None:
        """Cut the power just before the ``ops``-th write, truncate, sync or
        delete from now (1: the next one), on whichever thread makes it; the
        :class:`Cut` is then given by :meth:`wait_cut`. A cut at an I/O
        boundary lands inside commits and checkpoints far more often than one
        at a random instant, when the writer is mostly running Python."""
        if ops < 1:
            raise ValueError(f"ops must be >= 1, not {ops!r}")
        with self._lock:
            self._armed = (ops, at_cut)

    def wait_cut(self, timeout: float | None = None) -> Cut | None:
        """The armed cut, once it happened (None if not within ``timeout``)."""
        return self._cut if self._cut_done.wait(timeout) else None

    def resume(self) -> None:
        """Power back on: blocked writers continue (against the real files;
        a :class:`Cut` already taken does not change)."""
        self._power.set()

    def _mutate(self, fn: Callable[[], T]) -> T:
        while True:
            self._power.wait()
            with self._lock:
                if self._armed is not None:
                    left, at_cut = self._armed
                    if left > 1:
                        self._armed = (left - 1, at_cut)
                    else:
                        self._cut_now(at_cut)
                if self._power.is_set():
                    return fn()

    def _track(self, path: str) -> None:
        """Called with _lock held."""
        if path in self._files:
            return
        if os.path.exists(path):
            with open(path, "rb") as f:
                self._files[path] = _FileState(f.read())
        else:
            self._files[path] = _FileState(None)

    def _pending(self, path: str | None, offset: int, data: bytes | None) -> None:
        """Called with _lock held."""
        if path is not None:
            self._files[path].pending.append((offset, data))

    def _synced(self, path: str | None) -> None:
        """Called with _lock held."""
        self.syncs += 1
        if path is not None and not self.ignore_syncs:
            self._files[path].synced()


def copy_file_set(db_path: str, new_db_path: str) -> None:
    """Copy a database's durable file set (db, -wal, -journal; no -shm), replacing
    whatever ``new_db_path`` had."""
    for suffix in (*DURABLE_SUFFIXES, "-shm"):
        if os.path.exists(new_db_path + suffix):
            os.remove(new_db_path + suffix)
    for suffix in DURABLE_SUFFIXES:
        if os.path.exists(db_path + suffix):
            shutil.copyfile(db_path + suffix, new_db_path + suffix)
