"""The errors a new user meets first: a path that cannot be opened, a bytes path, and an
integration whose framework is not installed.

Each once said too little: ``unable to open database file`` without the path, the
``:memory:`` reason for any bytes path, a bare ``ModuleNotFoundError``. Each now names
what is wrong and what to change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import apsw
import pytest

from conftest import run_python
from sqlite_gateway import Gateway


def start_error(path: object) -> BaseException:
    db = Gateway(path)  # type: ignore[arg-type]
    try:
        with pytest.raises(Exception) as failed:
            db.start()
    finally:
        db.close()
    return failed.value


def test_a_missing_folder_is_named_and_the_error_keeps_its_class(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "app.db"
    error = start_error(path)
    assert isinstance(error, apsw.CantOpenError)
    assert error.result == apsw.SQLITE_CANTOPEN  # code that checks the code still works
    assert str(path) in str(error)
    assert f"its folder {tmp_path / 'no-such-folder'} does not exist" in str(error)


def test_a_folder_given_as_the_database_is_named(tmp_path: Path) -> None:
    error = start_error(tmp_path)
    assert isinstance(error, apsw.CantOpenError)
    assert str(tmp_path) in str(error) and "it is a folder, not a file" in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no permission error")
def test_a_folder_without_write_permission_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        error = start_error(folder / "app.db")
    finally:
        folder.chmod(0o700)
    assert isinstance(error, apsw.CantOpenError)
    assert "no permission to write in its folder" in str(error)


def test_a_bytes_path_opens_the_file_it_names(tmp_path: Path) -> None:
    path = tmp_path / "bytes.db"
    with Gateway(os.fsencode(path)) as db:  # type: ignore[arg-type]
        assert db.path == str(path)
        db.execute("CREATE TABLE t(x)")
        db.execute("INSERT INTO t VALUES (1)")
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()


def test_bytes_that_cannot_name_a_sqlite_file_get_their_own_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        Gateway(os.fsencode(tmp_path) + b"/\xff.db")  # type: ignore[arg-type]
    assert "file name encoding" in str(refused.value)
    assert ":memory:" not in str(refused.value) and "needs WAL" not in str(refused.value)
    with pytest.raises(ValueError, match="needs WAL"):
        Gateway(b":memory:")  # type: ignore[arg-type]


# A child interpreter in which the frameworks fail to import as if not installed.
MISSING = """
import importlib.abc, json, sys
BLOCKED = {"cherrypy", "flask", "prometheus_client"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
said = {}
for name in ("sqlite_gateway.integrations.flask", "sqlite_gateway.integrations.cherrypy"):
    try:
        __import__(name)
    except ModuleNotFoundError as exc:
        said[name] = [str(exc), exc.name]
from sqlite_gateway.metrics import GatewayCollector

class Source:
    def stats(self):
        return {"requests": 1}

try:
    list(GatewayCollector(Source()).collect())
except ModuleNotFoundError as exc:
    said["sqlite_gateway.metrics"] = [str(exc), exc.name]
print(json.dumps(said))
"""


def test_a_missing_framework_names_the_extra_that_installs_it() -> None:
    done = run_python(MISSING)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said == {
        "sqlite_gateway.integrations.flask": [
            "sqlite_gateway.integrations.flask needs flask: install it with "
            "pip install 'sqlite-gateway[flask]'", "flask"],
        "sqlite_gateway.integrations.cherrypy": [
            "sqlite_gateway.integrations.cherrypy needs cherrypy: install it with "
            "pip install 'sqlite-gateway[web]'", "cherrypy"],
        "sqlite_gateway.metrics": [
            "sqlite_gateway.metrics needs prometheus_client: install it with "
            "pip install 'sqlite-gateway[metrics]'", "prometheus_client"],
    }
