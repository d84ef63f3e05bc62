"""``python -m sqlite_gateway.replication {restore,replicate,config} ...``

restore --from REPLICA --to PATH [--timestamp T]   a replica into a new database file
replicate DB [--to REPLICA] [--sync-interval S]    run litestream for DB until Ctrl-C/SIGTERM
config DB [--to REPLICA] [--sync-interval S]       print litestream's config (for systemd...)

REPLICA is a folder or a URL (``s3://bucket/prefix``; ``--endpoint``,
``--region``, ``--force-path-style`` for S3-compatible storage; credentials
from the environment). Exit code 0 on success, 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from .litestream import ReplicationError, config_text, restore
from .replicator import Replicator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlite_gateway.replication",
                                     description="Litestream replication for a gateway's file")
    commands = parser.add_subparsers(dest="command", required=True)
    rest = commands.add_parser("restore", help="restore a replica into a new database file")
    rest.add_argument("--from", dest="replica", required=True, help="replica folder or URL")
    rest.add_argument("--to", required=True, help="new database file (must not exist)")
    rest.add_argument("--timestamp", help="restore the state at this RFC 3339 time")
    rep = commands.add_parser("replicate", help="run litestream for DB until Ctrl-C")
    conf = commands.add_parser("config", help="print litestream's config for DB")
    for sub in (rep, conf):
        sub.add_argument("db", help="the database file")
        sub.add_argument("--to", dest="replica",
                         help="replica folder or URL (default: DB-replica beside it)")
        sub.add_argument("--sync-interval", type=float, default=1.0, help="seconds")
    for sub in (rest, rep, conf):
        sub.add_argument("--endpoint", help="S3-compatible endpoint URL")
        sub.add_argument("--region")
        sub.add_argument("--force-path-style", action="store_true", default=None)
    args = parser.parse_args(argv)
    s3 = {"endpoint": args.endpoint, "region": args.region,
          "force_path_style": args.force_path_style}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "restore":
            print(restore(args.replica, args.to, timestamp=args.timestamp, **s3))
        elif args.command == "config":
            replica = args.replica or os.path.abspath(args.db) + "-replica"
            print(config_text(args.db, replica, sync_interval=args.sync_interval, **s3), end="")
        else:
            return _replicate(Replicator(args.db, args.replica,
                                         sync_interval=args.sync_interval, **s3))
    except (ReplicationError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _replicate(replicator: Replicator) -> int:
    """Run ``replicator`` until Ctrl-C, SIGTERM or SIGHUP (exit 0 after a clean stop), or
    until its supervisor gives up (exit 1). systemd, docker and ``timeout`` stop with
    SIGTERM: it must stop litestream as Ctrl-C does, not leave it running."""
    asked: list[str] = []

    def ask_to_stop(signum: int, frame: object) -> None:
        asked.append(signal.Signals(signum).name)  # only a flag: safe whatever runs now

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        replicator.start()
        while replicator.failed is None and not asked:  # bounded by a signal or a give-up
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        replicator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if replicator.failed else 0


if __name__ == "__main__":
    sys.exit(main())
