"""The public surface, and the Result type."""

from __future__ import annotations

import types

import pytest

import sqlite_gateway
from sqlite_gateway import Gateway, GatewayClosed, GatewayError, Overloaded, RequestTimeout, Result


def test_all_lists_exactly_the_public_names():
    assert sorted(sqlite_gateway.__all__) == sorted(
        ["Gateway", "Result", "GatewayError", "GatewayClosed", "Overloaded", "RequestTimeout",
         "PostFailure"])
    public = {name for name, value in vars(sqlite_gateway).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)
              and name != "annotations"}
    assert public == set(sqlite_gateway.__all__)


def test_errors_share_one_base():
    for cls in (GatewayClosed, Overloaded, RequestTimeout):
        assert issubclass(cls, GatewayError)
    assert issubclass(RequestTimeout, TimeoutError)


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
