"""Replicator: ``litestream replicate`` for one database, as a supervised child process."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from ..lifecycle import _close_at_exit as _close_gateways_at_exit
from .litestream import (Log, ReplicationError, config_text, default_log, duration,
                         find_litestream, log_line, logger, sync)

_running: weakref.WeakSet[Replicator] = weakref.WeakSet()


class Replicator:
    """``litestream replicate`` for one database, as a supervised child process.

    ``start()`` writes the config to a private temp folder and starts the
    child; one supervisor thread logs its output and restarts it when it
    exits unexpectedly (after ``backoff[0]`` s, doubling up to ``backoff[1]``;
    after ``max_failures`` exits in a row, each within ``stable_after`` s of
    its start, it gives up: ``failed`` says why and the log has it at
    CRITICAL). ``sync()`` is a barrier for the replica. ``stop()`` syncs,
    sends SIGINT (Litestream syncs once more and exits), kills it after
    ``stop_timeout`` s, and joins the thread. start/stop/sync are thread-safe;
    start and stop are idempotent; a stopped Replicator can start again.

    Stop it *after* the gateway has closed, so the final sync has every
    commit. At interpreter exit, open gateways are drained first, then
    running replicators are stopped. Litestream runs in its own session, so a
    terminal's Ctrl-C reaches only us. If this process is killed outright, on
    Linux litestream gets SIGINT from the kernel (it syncs and exits: the
    parent-death signal, set on each child; the supervisor thread starts
    every child, because the kernel sends it when the *thread* that started
    the child ends); elsewhere it keeps running until it is stopped: run the
    app under a supervisor that stops the whole group, or stop it by its
    ``pid``.

    Args:
        db_path: the database file the gateway writes.
        replica: a folder or URL (see ``replica_config``); default a folder
            ``<db_path>-replica`` beside it. Put it on another disk or in S3,
            or it does not survive a lost disk.
        sync_interval, monitor_interval, endpoint, region, force_path_style:
            see ``config_text``.
        binary: the litestream executable (default: ``find_litestream()``).
        env: the child's environment (default: this process's).
        log: ``log(message, level)`` for litestream's lines and ours
            (default: the ``sqlite_gateway.replication`` logger).

    Raises:
        ReplicationError: (constructor) litestream cannot be found; (start) a
            replica folder cannot be created or written.
        ValueError: an option is out of range.
    """

    def __init__(self, db_path: str | os.PathLike[str], replica: str | os.PathLike[str] | None
                 = None, *, sync_interval: float = 1.0, monitor_interval: float | None = None,
                 endpoint: str | None = None, region: str | None = None,
                 force_path_style: bool | None = None, binary: str | os.PathLike[str] | None
                 = None, env: Mapping[str, str] | None = None, log: Log | None = None,
                 backoff: tuple[float, float] = (0.5, 30.0), max_failures: int = 10,
                 stable_after: float = 60.0, stop_timeout: float = 30.0) -> None:
        self.db_path = os.path.abspath(os.fspath(db_path))
        self.replica = os.fspath(replica) if replica is not None else self.db_path + "-replica"
        self.sync_interval, self.monitor_interval = sync_interval, monitor_interval
        self.endpoint, self.region, self.force_path_style = endpoint, region, force_path_style
        self._config(None)  # validates the settings now, not at start()
        for name, value in (("backoff[0]", backoff[0]), ("backoff[1]", backoff[1]),
                            ("stable_after", stable_after), ("stop_timeout", stop_timeout)):
            duration(name, value)  # validates: a number of seconds > 0
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"max_failures must be a whole number >= 1, not {max_failures!r}")
        self.binary = find_litestream(binary)
        self.env = dict(env) if env is not None else None
        self.log: Log = log or default_log
        self.backoff, self.max_failures = backoff, max_failures
        self.stable_after, self.stop_timeout = stable_after, stop_timeout
        self.restarts = 0  # unexpected exits followed by a new start
        self.failed: str | None = None  # why the supervisor gave up, if it did
        # _lock is held while changing _process, _thread, _stopping and _folder,
        # so stop() cannot miss a child that the supervisor is starting.
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._folder: str | None = None  # the config and the control socket

    @property
    def pid(self) -> int | None:
        """The running child's process id (None when none runs)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def socket(self) -> str | None:
        """The control socket (``litestream sync -socket``) while started."""
        folder = self._folder
        return None if folder is None else os.path.join(folder, "litestream.sock")

    def start(self) -> Replicator:
        """Start litestream and its supervisor; return once the child runs (not after a sync).

        Raises:
            ReplicationError: a replica folder cannot be created or written
                (litestream itself would only log that, every second, forever).
            OSError: litestream cannot be started.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            _check_folder_replica(self.replica)
            # Short and private: a Unix socket path must stay under ~100 bytes.
            self._folder = tempfile.mkdtemp(prefix="litestream-")
            Path(self._folder, "litestream.yml").write_text(self._config(self.socket))
            self._stopping = threading.Event()
            self.failed = None
            first: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
            thread = threading.Thread(target=self._supervise, args=(self._stopping, first),
                                      name=f"litestream:{os.path.basename(self.db_path)}",
                                      daemon=True)  # stopped by stop() or at exit
            thread.start()
            error = first.get()  # the supervisor sets _process for us: we hold the lock
            if error is not None:
                thread.join()
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None
                raise error
            self._thread = thread
            process = self._process
            assert process is not None
        _running.add(self)
        self.log(f"replication: litestream started (pid {process.pid}) for "
                 f"{self.db_path} -> {self.replica}", logging.INFO)
        return self

    def sync(self, timeout: float = 30.0) -> dict[str, object]:
        """Barrier: return once the replica has every commit made before the call.

        Returns Litestream's answer (``txid``, ``replica_txid``, ``duration_ms``).

        Raises:
            ReplicationError: litestream is not running, or the sync failed or
                took over ``timeout`` seconds.
        """
        socket = self.socket
        if socket is None or not self.running:
            raise ReplicationError(f"litestream is not running for {self.db_path}")
        return sync(self.binary, socket, self.db_path, timeout=timeout, env=self.env)

    def stop(self, timeout: float | None = None) -> None:
        """Sync, SIGINT litestream (it syncs again and exits), wait, then kill if needed.

        Returns when the child and the supervisor thread have ended. ``timeout``
        (default ``stop_timeout``) bounds the sync and the wait, each.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        if self.running and os.path.exists(self.db_path):  # nothing to sync without it
            try:
                self.sync(timeout)
            except ReplicationError as exc:
                self.log(f"replication: the sync before stopping failed ({exc}); litestream's "
                         "own sync on SIGINT is the last one", logging.WARNING)
        with self._lock:
            self._stopping.set()
            process, thread, self._thread = self._process, self._thread, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.log("replication: litestream did not stop after SIGINT; killing it",
                         logging.WARNING)
                process.kill()
                process.wait()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if process is not None and process.stdout is not None:
            process.stdout.close()  # the supervisor closes it too; this covers the rest
        with self._lock:
            folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        _running.discard(self)
        if process is not None:
            self.log(f"replication: litestream stopped (exit code {process.returncode})",
                     logging.INFO)

    def __enter__(self) -> Replicator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _config(self, socket: str | None) -> str:
        return config_text(self.db_path, self.replica, sync_interval=self.sync_interval,
                           monitor_interval=self.monitor_interval, endpoint=self.endpoint,
                           region=self.region, force_path_style=self.force_path_style,
                           socket=socket)

    def _spawn(self) -> subprocess.Popen[str]:
        """Start a child; called on the supervisor thread only (see the parent-death signal)."""
        assert self._folder is not None
        # Its own session: a terminal's Ctrl-C reaches only us, so litestream's
        # last sync comes after the gateway has drained (stop() sends SIGINT).
        return subprocess.Popen(
            [self.binary, "replicate", "-config", os.path.join(self._folder, "litestream.yml")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=self.env, start_new_session=True, preexec_fn=_die_with_parent)

    def _supervise(self, stopping: threading.Event,
                   first: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            self._process = self._spawn()  # start() holds _lock for us until first is answered
        except BaseException as exc:
            first.put(exc)
            return
        first.put(None)
        failures, delay = 0, self.backoff[0]
        while True:  # one turn per child process; ends on stop or after max_failures
            process = self._process
            assert process is not None and process.stdout is not None
            started = time.monotonic()
            with process.stdout:
                for line in process.stdout:  # ends when the child exits (EOF)
                    log_line(self.log, line)
            code = process.wait()
            if stopping.is_set():
                return
            if time.monotonic() - started >= self.stable_after:
                failures, delay = 0, self.backoff[0]
            failures += 1
            if failures >= self.max_failures:
                self.failed = (f"litestream exited {failures} times in a row (last exit code "
                               f"{code}); not restarted: nothing is being replicated")
                self.log(f"replication: {self.failed}", logging.CRITICAL)
                return
            self.log(f"replication: litestream exited with code {code}; restarting in "
                     f"{delay:.1f} s", logging.ERROR)
            if stopping.wait(delay):
                return
            delay = min(delay * 2, self.backoff[1])
            with self._lock:
                if stopping.is_set():
                    return
                try:
                    process = self._process = self._spawn()
                except OSError as exc:
                    self.failed = f"litestream could not be restarted: {exc}"
                    self.log(f"replication: {self.failed}", logging.CRITICAL)
                    return
                self.restarts += 1
            self.log(f"replication: litestream restarted (pid {process.pid})", logging.WARNING)


def _check_folder_replica(replica: str) -> None:
    """Create a folder replica and write a probe file in it, or raise ``ReplicationError``.

    URLs (S3...) are not checked here: their errors appear in litestream's log.
    """
    parsed = urlparse(replica)
    if len(parsed.scheme) > 1 and parsed.scheme != "file":
        return
    folder = os.path.abspath(parsed.path if parsed.scheme == "file" else replica)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReplicationError(f"cannot write the replica folder {folder}: "
                               f"{exc.strerror or exc}; choose a writable --to") from None


# prctl(PR_SET_PDEATHSIG, SIGINT): the kernel signals the child when the thread that
# started it ends. Looked up before any fork: the child may only call async-signal-safe code.
_PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # best effort: without it, only stop() stops the child
        _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: ask for SIGINT when the parent (thread) dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)


@atexit.register
def _stop_at_exit() -> None:
    """Drain open gateways first, then stop replicators: their last sync then has it all."""
    running = list(_running)
    if running:
        _close_gateways_at_exit()
    for replicator in running:
        logger.warning("litestream for %s was not stopped; stopping it at interpreter exit",
                       replicator.db_path)
        replicator.stop()
