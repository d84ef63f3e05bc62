"""The settings parser every integration shares: config keys -> checked Gateway options."""

from __future__ import annotations

import dataclasses

import pytest

from sqlite_gateway import Options
from sqlite_gateway.integrations.http import error_answer
from sqlite_gateway.integrations.settings import OPTIONS, parse_settings


def test_every_gateway_option_is_configurable():
    assert list(OPTIONS) == [f.name for f in dataclasses.fields(Options)]
    assert "" not in OPTIONS.values()  # each option's type is one the parser reads


def test_text_values_are_read_as_their_option_needs(db_path):
    settings = parse_settings({"APP_DEBUG": True, "DB_PATH": db_path, "DB_QUEUE_SIZE": "12",
                               "DB_TIMEOUT": "none", "DB_BUSY_TIMEOUT": "2.5",
                               "DB_SYNCHRONOUS": "normal"},
                              prefix="DB_", upper=True)
    assert settings.path == db_path
    assert settings.options == {"queue_size": 12, "timeout": None, "busy_timeout": 2.5,
                                "synchronous": "normal"}


@pytest.mark.parametrize("config, error, message", [
    ({"DB_QUEUE": 5}, ValueError, "unknown setting 'DB_QUEUE'; known: DB_AUTOCHECKPOINT"),
    ({"DB_QUEUE_SIZE": "many"}, ValueError, "DB_QUEUE_SIZE must be a whole number, not 'many'"),
    ({"DB_QUEUE_SIZE": 2.5}, TypeError, "DB_QUEUE_SIZE must be a whole number"),
    ({"DB_QUEUE_SIZE": True}, TypeError, "DB_QUEUE_SIZE must be a whole number"),
    ({"DB_QUEUE_SIZE": 0}, ValueError, "DB_QUEUE_SIZE must be a whole number >= 1"),
    ({"DB_READ_MODE": "sometimes"}, ValueError, "DB_READ_MODE must be 'inline' or 'threads'"),
    # Production configuration cannot choose an old, slower way: only code passes a factory.
    ({"DB_BACKEND": "retry"}, ValueError, "unknown setting 'DB_BACKEND'"),
    ({"DB_PATH": ":memory:"}, ValueError, "DB_PATH must name a database file"),
])
def test_bad_settings_are_refused_with_the_key_name(config, error, message):
    with pytest.raises(error, match="^" + message.replace("(", r"\(")):
        parse_settings(config, prefix="DB_", upper=True)


def test_open_makes_the_database_with_the_factory_given(db_path):
    """A factory gets the path and the converted options, and its database is started."""
    from benchmarks.baselines import RetryGateway
    made = []

    def factory(path, **options):
        made.append((path, options))
        return RetryGateway(path, **options)

    settings = parse_settings({"DB_PATH": db_path, "DB_TIMEOUT": "7"}, prefix="DB_", upper=True)
    db = settings.open(lambda db: db.execute("CREATE TABLE t(x)"), factory=factory)
    try:
        assert isinstance(db, RetryGateway) and db.timeout == 7
        assert made == [(db_path, {"timeout": 7.0})]
        assert db.execute("SELECT count(*) FROM t").scalar() == 0  # setup ran on it
    finally:
        db.close()


def test_a_missing_path_is_refused_only_when_opening():
    settings = parse_settings({}, source="engine.sqlite_gateway.{}")
    with pytest.raises(ValueError, match="set engine.sqlite_gateway.path in the config"):
        settings.open()


def test_unexpected_errors_map_to_a_500_that_hides_them():
    answer = error_answer(KeyError("secret"))
    assert (answer.status, answer.logged, answer.headers) == (500, True, {})
    assert b"secret" not in answer.json_body()
