"""The ``sqlite-gateway`` command: backups, restores and Litestream replication from a shell.

::

    sqlite-gateway backup DB --dir DIR [--keep N]     a consistent online copy into DIR
    sqlite-gateway restore BACKUP --to NEW.db         a backup (or DIR's newest) into a new file
    sqlite-gateway replicate DB [--to REPLICA] ...    run litestream for DB until Ctrl-C
    sqlite-gateway restore-replica --from REPLICA --to NEW.db [--timestamp T]
    sqlite-gateway replica-config DB [--to REPLICA]   print litestream's config (for systemd...)

``python -m sqlite_gateway ...`` is the same command. It needs apsw only: no
web framework is imported, so it runs on a machine where only the library is
installed. The three replication commands are those of ``python -m
sqlite_gateway.replication`` (``replicate``, ``restore``, ``config``) under
names that do not clash with the backup commands; they need the
``replication`` extra (the litestream binary). Exit code 0 on success, 1 with
the reason on stderr, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import apsw

from . import __version__
from .backup import backup, restore

# Our name -> the replication command's own name; their arguments pass through unchanged.
_REPLICATION = {
    "replicate": ("replicate", "run litestream for DB until Ctrl-C"),
    "restore-replica": ("restore", "restore a Litestream replica into a new database file"),
    "replica-config": ("config", "print litestream's config for DB"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlite-gateway",
        description="Backups, restores and Litestream replication of a SQLite database file.",
        epilog="Run 'sqlite-gateway COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    make = commands.add_parser(
        "backup", help="back up DB into a folder, keeping the newest N",
        description="Copy DB with SQLite's online backup API (a consistent snapshot; the app "
                    "may keep writing) into DIR/backup-<UTC time>.db, then delete all but the "
                    "newest N backups. Prints the new file's path.")
    make.add_argument("db", help="the database file")
    make.add_argument("--dir", required=True, help="the backup folder (created if missing)")
    make.add_argument("--keep", type=int, default=3, help="how many backups to keep (default 3)")
    back = commands.add_parser(
        "restore", help="restore a backup into a new database file",
        description="Copy a backup into a new database file and check its integrity. "
                    "Prints the new file's path. Stop the app before you put it in place of "
                    "the database (and remove the old -wal and -shm files).")
    back.add_argument("backup", help="a backup file, or a folder (its newest backup)")
    back.add_argument("--to", required=True, help="the new database file (must not exist)")
    for name, (_, text) in _REPLICATION.items():
        # Listed for --help only: main() hands these to the replication command before parsing.
        commands.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Raises:
        SystemExit: for ``--help``, ``--version`` and usage errors (argparse's way).
    """
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] in _REPLICATION:
        from .replication.__main__ import main as replication_main  # the litestream wrapper

        return replication_main([_REPLICATION[args_in[0]][0], *args_in[1:]])
    args = _parser().parse_args(args_in)
    try:
        if args.command == "backup":
            print(backup(args.db, args.dir, keep=args.keep)[0])
        else:
            print(restore(args.backup, args.to))
    except (OSError, RuntimeError, ValueError, apsw.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
