"""The library and its integrations package import with no web framework installed."""

from __future__ import annotations

import json

from conftest import run_python

# A child interpreter in which importing a framework fails as if it were not installed.
_BLOCKED = """
import importlib.abc, json, sys
BLOCKED = {"cherrypy", "flask", "werkzeug", "aiosqlite"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Block())
import sqlite_gateway, sqlite_gateway.integrations
import sqlite_gateway.integrations.http, sqlite_gateway.integrations.settings
import sqlite_gateway.integrations.asyncio
failed = {}
for name in ("sqlite_gateway.integrations.cherrypy", "sqlite_gateway.integrations.flask"):
    try:
        __import__(name)
    except ModuleNotFoundError as exc:
        failed[name] = exc.name
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"failed": failed, "loaded": loaded}))
"""


def test_sqlite_gateway_imports_without_any_framework():
    proc = run_python(_BLOCKED)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["loaded"] == []
    # Each framework module fails only on its own framework, when it is imported itself.
    assert answer["failed"] == {"sqlite_gateway.integrations.cherrypy": "cherrypy",
                                "sqlite_gateway.integrations.flask": "flask"}


def test_importing_the_library_loads_no_framework_even_when_installed():
    proc = run_python("import sys, sqlite_gateway, sqlite_gateway.integrations\n"
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                      "{'cherrypy', 'flask', 'werkzeug', 'aiosqlite'}))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
