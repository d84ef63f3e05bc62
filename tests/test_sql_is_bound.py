"""Parameters are always bound: no SQL text is built with string formatting.

Every call that takes SQL (``execute``, ``executemany``, ``submit``, and the
library's ``run_sql``) in webapp/, helpers/ and sqlite_gateway/ is read with
``ast``. Its SQL argument must be a string constant, a concatenation of
constants, or a module-level constant; never an f-string with a value in it,
``%`` formatting, ``.format()``, or a concatenation with a variable (nor a
local variable bound to one of those). The library (sqlite_gateway/) may also
pass a caller's SQL through unchanged (a parameter or attribute), which is
what it is for. The few places that must format (a validated PRAGMA value, a
file of the package) are listed in ALLOWED with the reason; a new one fails
this test, and so does an entry of ALLOWED that no longer matches anything.
"""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

SQL_ARGUMENT = {"execute": 0, "executemany": 0, "submit": 0, "run_sql": 2}
APP_DIRS = ("webapp", "helpers")  # strict: SQL must be constant
LIBRARY_DIRS = ("sqlite_gateway",)  # may also pass the caller's SQL through

# (file, the SQL argument as ast.unparse writes it) -> why it is safe.
ALLOWED = {
    ("sqlite_gateway/connection.py", "f'PRAGMA synchronous={synchronous}'"):
        "a PRAGMA value cannot be bound; Gateway() checked it against SYNCHRONOUS",
    ("sqlite_gateway/integrations/peewee.py", "f'PRAGMA {pragma} = {value}'"):
        "a PRAGMA value cannot be bound; the name is one of _TUNING and the value a whole "
        "number or one of temp_store's words (checked by _tuning_value)",
    ("sqlite_gateway/snapshot.py", "_FIRST_READ"):
        "constant text with the per-process nonce (no caller value): the snapshot's own "
        "statement, kept apart from callers' texts in apsw's statement cache",
    ("webapp/app.py", "SCHEMA.read_text()"):
        "schema.sql, a file of the package, not request data",
    ("webapp/bets.py", "db"):
        "not SQL: TicketBook.submit(db, *args) takes the gateway (a method of the same name)",
}


def _is_static(node: ast.expr, constants: set[str]) -> bool:
    """A value known when the module is written: constants and their concatenations."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):  # an f-string without any {value} is a constant
        return all(isinstance(part, ast.Constant) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_static(node.left, constants) and _is_static(node.right, constants)
    return isinstance(node, ast.Name) and node.id in constants


def _module_constants(tree: ast.Module) -> set[str]:
    constants: set[str] = set()
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and _is_static(statement.value, constants)):
            constants.add(statement.targets[0].id)
    return constants


def _formatting(node: ast.expr) -> str | None:
    """How ``node`` builds text from values, or None if it does not."""
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return "% formatting"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return "a concatenation with a value"
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("format", "format_map", "join", "replace")):
        return f".{node.func.attr}()"
    return None


def find_unbound_sql(source: str, *, passthrough: bool) -> list[tuple[int, str, str]]:
    """Each SQL argument not known to be constant: (line, its source, why)."""
    tree = ast.parse(source)
    constants = _module_constants(tree)
    scopes: list[ast.AST] = [tree, *[n for n in ast.walk(tree)
                                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]]
    found: dict[tuple[int, int], tuple[int, str, str]] = {}
    for scope in scopes:
        local: dict[str, list[ast.expr]] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        local.setdefault(target.id, []).append(node.value)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            position = SQL_ARGUMENT.get(name or "")
            if position is None:
                continue
            sql = next((k.value for k in node.keywords if k.arg == "sql"), None)
            if sql is None and len(node.args) > position:
                sql = node.args[position]
            if sql is None or isinstance(sql, ast.Starred) or _is_static(sql, constants):
                continue
            why = _formatting(sql)
            if why is None and isinstance(sql, ast.Name) and sql.id in local:
                built = [_formatting(v) for v in local[sql.id] if not _is_static(v, constants)]
                why = next((f"a variable bound to {b}" for b in built if b), None)
                if why is None and not passthrough and built:
                    why = "a variable bound to a value computed at run time"
            if why is None and not passthrough:
                why = "not a constant"
            if why is not None:
                found[(sql.lineno, sql.col_offset)] = (sql.lineno, ast.unparse(sql), why)
    return sorted(found.values())


def _sources() -> list[tuple[str, bool]]:
    files = [(path, False) for d in APP_DIRS for path in sorted((ROOT / d).rglob("*.py"))]
    files += [(path, True) for d in LIBRARY_DIRS for path in sorted((ROOT / d).rglob("*.py"))]
    return [(str(path.relative_to(ROOT)), passthrough) for path, passthrough in files]


def test_sql_is_never_built_with_string_formatting():
    unexpected, used = [], set()
    for relative, passthrough in _sources():
        source = (ROOT / relative).read_text()
        for line, text, why in find_unbound_sql(source, passthrough=passthrough):
            if (relative, text) in ALLOWED:
                used.add((relative, text))
            else:
                unexpected.append(f"{relative}:{line}: {text} ({why})")
    assert unexpected == [], "SQL built from values; bind parameters instead:\n" + "\n".join(
        unexpected)
    assert set(ALLOWED) - used == set(), "ALLOWED lists places that no longer exist"


def test_the_scan_covers_the_code_that_runs_sql():
    """Every folder scanned has files that run SQL, so an empty or mistyped list of
    folders cannot make the scan above pass vacuously."""
    sources = _sources()
    for folder in (*APP_DIRS, *LIBRARY_DIRS):
        calls = [relative for relative, _ in sources if relative.startswith(folder + "/")
                 and any(f"{name}(" in (ROOT / relative).read_text() for name in SQL_ARGUMENT)]
        assert calls, f"no file of {folder}/ calls {', '.join(SQL_ARGUMENT)}"


SNIPPETS_BAD = [
    ('db.execute(f"SELECT * FROM t WHERE name = \'{name}\'")', "an f-string"),
    ('db.execute("SELECT * FROM t WHERE id = %s" % ident)', "% formatting"),
    ('db.execute("SELECT * FROM t WHERE id = {}".format(ident))', ".format()"),
    ('db.execute("SELECT * FROM t WHERE name = \'" + name + "\'")', "a concatenation"),
    ('conn.executemany("INSERT INTO " + table + " VALUES (?)", rows)', "a concatenation"),
    ('db.submit(" ".join(["DELETE FROM t WHERE id =", ident]))', ".join()"),
    ('def f(db, name):\n    sql = f"DELETE FROM t WHERE name = {name!r}"\n    db.execute(sql)',
     "a variable bound to an f-string"),
    ('run_sql(conn, guard, "SELECT %d" % n, ())', "% formatting"),
    ('db.execute(sql="SELECT " + column)', "a concatenation"),
]
SNIPPETS_GOOD = [
    'db.execute("SELECT * FROM t WHERE name = ?", (name,))',
    'db.execute("SELECT * FROM t"\n           " WHERE id = ?", (ident,))',
    'db.execute("SELECT 1" + " FROM t")',
    'QUERY = "SELECT * FROM t WHERE id = :id"\ndb.execute(QUERY, {"id": ident})',
    'BASE = "SELECT * FROM t"\nMORE = BASE + " WHERE id = ?"\ndb.execute(MORE, (1,))',
    'db.execute(f"SELECT 1")',
]


@pytest.mark.parametrize("snippet, why", SNIPPETS_BAD)
def test_the_scan_catches_sql_built_from_values(snippet, why):
    for passthrough in (False, True):
        found = find_unbound_sql(snippet, passthrough=passthrough)
        assert len(found) == 1 and why in found[0][2], (passthrough, found)


@pytest.mark.parametrize("snippet", SNIPPETS_GOOD)
def test_the_scan_accepts_constant_sql(snippet):
    assert find_unbound_sql(snippet, passthrough=False) == []


def test_only_the_library_may_pass_a_callers_sql_through():
    snippet = "def run(conn, sql, params):\n    return conn.execute(sql, params)"
    assert find_unbound_sql(snippet, passthrough=True) == []
    assert [why for _, _, why in find_unbound_sql(snippet, passthrough=False)] == [
        "not a constant"]
