"""``python -m sqlite_gateway``: the ``sqlite-gateway`` command (see ``cli.py``)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
