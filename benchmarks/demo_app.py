"""``python -m benchmarks.demo_app --backend gateway|retry|busy [webapp options]``:
the demo app on the gateway or on an old way, for the load sweep.

The demo app (``python -m webapp``) always runs on a Gateway: production
configuration has no way to choose a slower one. This entry point serves the
same app, unchanged, with the database made by one of the baselines of
:mod:`benchmarks.baselines` (passed to the app as its factory), so that the
load sweep can compare the ways on one code path. Every other option is
``python -m webapp``'s (``--port``, ``--db``, ``--config``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sqlite_gateway import Gateway

from .baselines import BusyGateway, RetryGateway

# --backend -> the factory the app is given: each makes its database from (path, **options).
FACTORIES: dict[str, Callable[..., Any]] = {
    "gateway": Gateway,
    "retry": RetryGateway,  # a connection per thread, backoff and retry
    "busy": BusyGateway,    # a connection per thread, busy timeout, BEGIN IMMEDIATE
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=tuple(FACTORIES), default="gateway")
    args, rest = parser.parse_known_args(argv)
    from webapp.__main__ import main as serve  # cherrypy only when serving
    serve(rest, factory=FACTORIES[args.backend],
          prog=f"python -m benchmarks.demo_app --backend {args.backend}")


if __name__ == "__main__":
    main()
