"""``python -m webapp [--config F] [--port N] [--db PATH]``: serve the demo.

Binds 127.0.0.1 (the config's host); Ctrl-C or SIGTERM stops it gracefully
(the HTTP server first, then the helper jobs, then the gateway drains). The
admin token comes from $SQLITE_GATEWAY_ADMIN_TOKEN, or a random one is
printed at start. A port already in use is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

import cherrypy

from sqlite_gateway.integrations.settings import DatabaseFactory

from .app import DEFAULT_CONFIG, build_app, load_config


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port``, or None if it can.

    A bind with SO_REUSEADDR, as the server's own: a port left in TIME_WAIT
    by an earlier run is free; one with a listener is not.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (choose another with --port N)"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def main(argv: list[str] | None = None, factory: DatabaseFactory | None = None,
         prog: str = "python -m webapp") -> None:
    """Serve the demo until stopped. ``factory`` makes the database instead of a
    Gateway (``python -m benchmarks.demo_app`` passes a baseline)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="CherryPy config file")
    parser.add_argument("--port", type=int, help="override server.socket_port")
    parser.add_argument("--db", help="override engine.sqlite_gateway.path")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    global_conf = config.setdefault("global", {})
    if args.port is not None:
        global_conf["server.socket_port"] = args.port
    host = str(global_conf.get("server.socket_host", "127.0.0.1"))
    problem = port_problem(host, int(global_conf.get("server.socket_port", 8080)))
    if problem is not None:
        sys.exit(f"webapp: {problem}")
    build_app(config, db_path=args.db, factory=factory)
    cherrypy.engine.signal_handler.subscribe()  # SIGTERM: exit, SIGHUP: graceful
    cherrypy.engine.start()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
