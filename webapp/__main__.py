"""``python -m webapp [--config F] [--port N] [--db PATH] [--backend B]``: serve the demo.

Binds 127.0.0.1 (the config's host); Ctrl-C or SIGTERM stops it gracefully
(the HTTP server first, then the helper jobs, then the gateway drains).
"""

from __future__ import annotations

import argparse

import cherrypy

from .app import DEFAULT_CONFIG, build_app, load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webapp", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="CherryPy config file")
    parser.add_argument("--port", type=int, help="override server.socket_port")
    parser.add_argument("--db", help="override engine.sqlite_gateway.path")
    parser.add_argument("--backend", choices=("gateway", "retry", "busy"),
                        help="override db.backend: the gateway, or an old way (retry, busy)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.port is not None:
        config.setdefault("global", {})["server.socket_port"] = args.port
    if args.backend is not None:
        config.setdefault("global", {})["db.backend"] = args.backend
    build_app(config, db_path=args.db)
    cherrypy.engine.signal_handler.subscribe()  # SIGTERM: exit, SIGHUP: graceful
    cherrypy.engine.start()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
