"""apsw VFS shims that tests and benchmarks open connections through, by name.

Each shim is an :class:`apsw.VFS` registered under the name it is given, and
inherits everything from SQLite's default VFS; a connection uses one with
``apsw.Connection(path, vfs=shim.name)`` or ``Gateway(path, vfs=shim.name)``,
and ``shim.unregister()`` removes it once every connection is closed. One
module per shim:

- :mod:`benchmarks.vfs.fault`: :class:`~benchmarks.vfs.fault.FaultVFS` fails
  reads, writes, syncs or opens on demand, and can slow every xSync (the fault
  tests and the history checker);
- :mod:`benchmarks.vfs.power`: :class:`~benchmarks.vfs.power.PowerVFS`
  remembers what is durable and simulates a power cut (the power-loss tests
  and campaign);
- :mod:`benchmarks.vfs.slow_sync`: :class:`~benchmarks.vfs.slow_sync.SlowSyncVFS`
  sleeps a fixed time in every xSync, over a RAM-backed directory
  (:func:`~benchmarks.vfs.slow_sync.ram_directory`), so that a benchmark
  controls what an fsync costs.

Tests import them (``from benchmarks.vfs.fault import FaultVFS``); benchmarks
never import tests.
"""
