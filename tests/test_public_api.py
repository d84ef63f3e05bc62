"""The public surface, and the Result type."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import types

import pytest

import sqlite_gateway
from sqlite_gateway import (Connection, ConnectionSettingError, Database, Gateway, GatewayClosed,
                            GatewayError, NestedCallError, Options, Overloaded, RequestTimeout,
                            Result, State, TransactionControlError)
from benchmarks.baselines import BusyGateway, RetryGateway


def test_all_lists_exactly_the_public_names():
    assert sorted(sqlite_gateway.__all__) == sorted(
        ["Gateway", "Options", "Database", "State", "Result", "Connection", "PostFailure",
         "WriteBlock", "GatewayError", "GatewayClosed", "Overloaded", "RequestTimeout",
         "TransactionControlError", "ConnectionSettingError", "NestedCallError",
         "WriteBlockExpired"])
    public = {name for name, value in vars(sqlite_gateway).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)
              and name != "annotations"}
    assert public == set(sqlite_gateway.__all__)


def test_errors_share_one_base():
    for cls in (GatewayClosed, Overloaded, RequestTimeout, TransactionControlError,
                ConnectionSettingError, NestedCallError):
        assert issubclass(cls, GatewayError)
    assert issubclass(RequestTimeout, TimeoutError)


def test_every_exported_error_is_drawn_in_the_errors_docstring():
    from sqlite_gateway import errors
    for name in sqlite_gateway.__all__:
        if isinstance(getattr(sqlite_gateway, name), type) and issubclass(
                getattr(sqlite_gateway, name), GatewayError):
            assert f"+-- {name} " in errors.__doc__, name


def test_importing_the_package_imports_no_web_framework():
    code = ("import sys, sqlite_gateway; "
            "print(sorted(m for m in ('cherrypy', 'flask', 'prometheus_client') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def _surface(cls):
    """Each public call of ``cls``: its parameters (name, kind, default) after self."""
    calls = {}
    for name in dir(Database):
        if name.startswith("_") and name not in ("__enter__", "__exit__"):
            continue
        member = inspect.getattr_static(cls, name, None)
        if isinstance(member, property):
            calls[name] = "property"
        elif callable(member):
            params = list(inspect.signature(member).parameters.values())[1:]
            calls[name] = [(p.name, p.kind, p.default is not inspect.Parameter.empty)
                           for p in params]
    return calls


@pytest.mark.parametrize("cls", [Gateway, RetryGateway, BusyGateway])
def test_every_gateway_class_has_the_database_calls(cls):
    """The runtime half of the check (mypy checks the types): each call of the
    Database protocol exists with the same parameter names, kinds and optionality."""
    expected = _surface(Database)
    assert set(expected) >= {"execute", "executemany", "transaction", "submit",
                             "submit_transaction", "post", "failures", "flush",
                             "run_exclusive", "bulk", "stats", "close", "start", "state"}
    assert _surface(cls) == expected


def test_options_hold_every_default_and_are_checked_once():
    options = Options()
    assert options.queue_size == 10_000 and options.batch_max == 256
    assert options.timeout == 30.0 and options.busy_timeout == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.queue_size = 1  # type: ignore[misc]
    assert Options(synchronous="normal").synchronous == "NORMAL"
    with pytest.raises(ValueError, match="^hang_timeout"):
        Options(busy_timeout=10, hang_timeout=5)
    with pytest.raises(TypeError, match="unknown gateway options: queue"):
        Options.build(None, {"queue": 3})
    assert Options.build(Options(readers=0), {"queue_size": 5}) == Options(readers=0,
                                                                           queue_size=5)


def test_a_gateway_takes_options_as_one_value_or_as_keywords(db_path):
    db = Gateway(db_path, Options(queue_size=7, readers=0), batch_max=3)
    assert db.options == Options(queue_size=7, readers=0, batch_max=3)
    assert db.state is State.NEW
    with pytest.raises(TypeError, match="batch_size"):
        Gateway(db_path, batch_size=3)


def test_a_transaction_fn_receives_the_exported_connection(gateway):
    seen = gateway.transaction(lambda conn: type(conn))
    assert seen is Connection


def test_result_iterates_its_rows_and_is_immutable():
    r = Result(((1, "a"), (2, "b")), rowcount=0, lastrowid=0, columns=("id", "name"))
    assert list(r) == [(1, "a"), (2, "b")]
    assert len(r) == 2
    assert r.scalar() == 1
    assert r.dicts() == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    with pytest.raises(AttributeError):
        r.rows = ()  # type: ignore[misc]
    assert Result().scalar() is None


def test_package_ships_py_typed():
    from importlib.resources import files
    assert files("sqlite_gateway").joinpath("py.typed").is_file()


def test_gateway_refuses_bad_options(db_path):
    with pytest.raises(ValueError, match="queue_size"):
        Gateway(db_path, queue_size=0)
    with pytest.raises(ValueError, match="batch_max"):
        Gateway(db_path, batch_max=-3)
    with pytest.raises(ValueError, match="synchronous"):
        Gateway(db_path, synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="timeout"):
        Gateway(db_path, timeout=-1)
    with pytest.raises(ValueError, match="WAL"):
        Gateway(":memory:")
