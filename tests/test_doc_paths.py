"""Every repository path the documents name exists.

The documents are README.md, CONTRIBUTING.md, webapp/README.md, docs/*.md and the module
docstrings of every Python file in the repository (not CHANGELOG.md: it names what was
removed). A path is a file or folder under one of the repository's folders
(``sqlite_gateway/<module>.py``, ``tests/<file>.py``, ``docs/<name>.md``; a ``*``
matches as in a glob), a benchmark run as a module (``python -m benchmarks.<name>`` is
``benchmarks/<name>.py``), a dotted name under ``sqlite_gateway`` (a module, or a name one
of them defines), or a relative Markdown link.
"""

from __future__ import annotations

import ast
import importlib
import re

import pytest
from conftest import ROOT

FOLDERS = ("sqlite_gateway", "benchmarks", "tests", "docs", "webapp", "helpers", ".ci")
SOURCES = ("sqlite_gateway", "benchmarks", "tests", "webapp", "helpers")

# Named by the documents but not in the repository, each for its reason (an entry ending in
# "/" allows everything under it).
ALLOWED = {
    "benchmarks/out/",  # where Locust's --csv files go when a user runs the load test (git-ignored)
    "tests/runtests.py",  # Django's test runner, in Django's source distribution (not ours)
    "sqlite_gateway.W001",  # the Django backend's system-check id, not a module
}

PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*)" % "|".join(re.escape(f) for f in FOLDERS))
MODULE = re.compile(r"python3? -m (benchmarks\.\w+|webapp)\b")
DOTTED = re.compile(r"(?<![\w./-])(sqlite_gateway(?:\.\w+)+)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def documents() -> dict[str, str]:
    """Each document's name and the text that names paths."""
    docs = {name: (ROOT / name).read_text()
            for name in ("README.md", "CONTRIBUTING.md", "webapp/README.md")
            if (ROOT / name).exists()}
    docs.update({f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))})
    files = [p for folder in SOURCES for p in sorted((ROOT / folder).rglob("*.py"))]
    files += sorted(ROOT.glob("*.py"))
    for path in files:
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        if docstring:
            docs[f"{path.relative_to(ROOT)} (docstring)"] = docstring
    return docs


def exists(path: str) -> bool:
    clean = path.rstrip(".,:;")
    if clean in ALLOWED or any(a.endswith("/") and (clean + "/").startswith(a) for a in ALLOWED):
        return True
    if "*" in clean:
        return any(ROOT.glob(clean))
    return (ROOT / clean).exists()


def dotted_exists(name: str) -> bool:
    """``sqlite_gateway.a.b``: the longest importable prefix, then attributes of it."""
    if name in ALLOWED:
        return True
    parts = name.split(".")
    if "__main__" in parts:  # importing it would run it: its file must exist
        return exists("/".join(parts) + ".py")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def named_paths(doc: str, text: str) -> list[tuple[str, str]]:
    """(what the text says, whether it exists as a repository path) for every path named."""
    found = []
    for match in PATH.findall(text):
        found.append((match, exists(match)))
    for module in MODULE.findall(text):
        path = module.replace(".", "/") + ".py" if "." in module else module + "/__main__.py"
        found.append((f"python -m {module}", exists(path)))
    for name in DOTTED.findall(text):
        found.append((name, dotted_exists(name)))
    if doc.endswith(".md"):
        folder = (ROOT / doc).parent
        for link in LINK.findall(text):
            if "://" not in link and not link.startswith("mailto:"):
                target = (folder / link).resolve()
                found.append((link, exists(str(target.relative_to(ROOT)))
                              if target.is_relative_to(ROOT) else False))
    return found


DOCS = documents()


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_path_a_document_names_exists(doc):
    missing = sorted({named for named, ok in named_paths(doc, DOCS[doc]) if not ok})
    assert missing == [], f"{doc} names paths that do not exist: {missing}"


def test_the_check_finds_a_missing_path():
    text = ("see sqlite_gateway/nothere.py, `python -m benchmarks.nothere`, "
            "sqlite_gateway.nothere and [a link](docs/nothere.md)")
    found = named_paths("README.md", text)
    assert {named for named, _ in found} == {
        "sqlite_gateway/nothere.py", "python -m benchmarks.nothere", "sqlite_gateway.nothere",
        "docs/nothere.md"}
    assert not any(ok for _, ok in found)
    assert all(ok for _, ok in named_paths("README.md", (
        "sqlite_gateway/gateway.py, tests/test_faults_*.py, `python -m benchmarks.compare`, "
        "sqlite_gateway.integrations.flask.FlaskGateway, [guide](docs/guide.md#faults)")))


def test_the_documents_are_found():
    assert {"README.md", "CONTRIBUTING.md", "webapp/README.md", "docs/benchmarks.md",
            "docs/guide.md", "sqlite_gateway/gateway.py (docstring)"} <= set(DOCS)


def test_allowed_paths_are_not_in_the_repository_yet():
    """An allowed path that now exists no longer needs its place on the list."""
    assert [p for p in ALLOWED if (ROOT / p).exists() and p != "benchmarks/out/"] == []


def layout_names() -> set[str]:
    """The ``name.py`` files CONTRIBUTING.md's layout tables list (rows of a
    ``| module | what it holds |`` table), relative to the package: a table's
    folder is the one the last line starting with ```sqlite_gateway/...` ``` names."""
    names: set[str] = set()
    in_table, folder = False, ""
    for line in (ROOT / "CONTRIBUTING.md").read_text().splitlines():  # bounded: the file
        heading = re.match(r"`sqlite_gateway/((?:\w+/)*)`", line)
        if heading:
            folder = heading.group(1)
        in_table = line.startswith("| module |") or (in_table and line.startswith("|"))
        if in_table:
            names.update(folder + name for name in re.findall(r"`(\w+\.py)`", line.split("|")[1]))
    return names


def test_contributing_layout_lists_every_module_and_only_modules():
    package = ROOT / "sqlite_gateway"
    modules = {str(p.relative_to(package)) for p in package.glob("*.py")}
    modules |= {str(p.relative_to(package)) for p in package.glob("integrations/*.py")}
    modules = {m for m in modules if not m.endswith("__init__.py")}
    listed = layout_names()
    assert sorted(modules - listed) == [], "add these to CONTRIBUTING.md's layout tables"
    assert sorted(listed - modules) == [], "CONTRIBUTING.md lists modules that do not exist"
