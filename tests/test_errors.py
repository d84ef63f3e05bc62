"""Exceptions cross threads unchanged and reach the caller that caused them."""

from __future__ import annotations

import traceback

import apsw
import pytest


def test_constraint_error_keeps_its_class_and_the_worker_traceback(gateway):
    gateway.execute("INSERT INTO items(name) VALUES ('dup')")
    with pytest.raises(apsw.ConstraintError, match="UNIQUE") as info:
        gateway.execute("INSERT INTO items(name) VALUES ('dup')")
    frames = traceback.extract_tb(info.value.__traceback__)
    files = [f.filename.replace("\\", "/") for f in frames]
    # The caller's frame first, then the frames down to where SQLite raised it (the
    # package's, then apsw's), whichever modules of the package those are.
    python = [f for f in files if f.endswith(".py")]
    assert python[0].endswith("tests/test_errors.py"), files
    assert "/sqlite_gateway/" in python[-1] and len(python) >= 3, files


def test_exception_from_a_transaction_fn_is_the_same_object(gateway):
    sentinel = KeyError("mine")

    def fn(conn):
        raise sentinel

    with pytest.raises(KeyError) as info:
        gateway.transaction(fn)
    assert info.value is sentinel


def test_an_error_is_never_raised_on_a_later_call(gateway):
    with pytest.raises(apsw.SQLError):
        gateway.execute("SELECT * FROM no_such_table")
    assert gateway.execute("SELECT 1").scalar() == 1


def test_a_fn_raising_timeout_error_is_not_taken_for_a_wait_timeout(gateway):
    def fn(conn):
        raise TimeoutError("from fn")

    with pytest.raises(TimeoutError, match="from fn") as info:
        gateway.transaction(fn)
    assert type(info.value) is TimeoutError
