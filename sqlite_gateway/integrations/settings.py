"""A framework's config keys -> validated :class:`~sqlite_gateway.Options`.

Every integration reads its config through :func:`parse_settings`, so each key
means the same and is checked the same way everywhere: CherryPy's
``engine.sqlite_gateway.queue_size`` and Flask's ``SQLITE_GATEWAY_QUEUE_SIZE``
are one setting. Values may be given as text (environment variables, ini
files): ``"30"`` is read as 30 and ``"none"`` as None where None is allowed.
An unknown key or a value out of range is refused with the key's name, before
anything is opened. Imports no framework.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..database import Database
from ..gateway import Gateway
from ..options import Options, check_path

# How a config value is read, by the annotation of the option (Options' field) it sets.
_INT, _SECONDS, _SECONDS_OR_NONE, _TEXT, _TEXT_OR_NONE, _BOOL = (
    "a whole number", "a number of seconds", "a number of seconds or none", "text",
    "text or none", "true or false")
_FUNCTION = "a function, or its import path as text ('package.module:function'), or none"
_KINDS = {"int": _INT, "float": _SECONDS, "float | None": _SECONDS_OR_NONE, "str": _TEXT,
          "str | None": _TEXT_OR_NONE, "bool": _BOOL,
          "Callable[[apsw.Connection], object] | None": _FUNCTION}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


OPTIONS: dict[str, str] = {f.name: _KINDS.get(str(f.type), "")  # "": taken as given
                           for f in dataclasses.fields(Options)}
"""Every gateway option a config may set (the fields of :class:`~sqlite_gateway.Options`,
so a new option is configurable everywhere at once), and the kind of value each takes."""

DatabaseFactory = Callable[..., Database]
"""How an integration makes its database: ``factory(path, **options)`` returns a
:class:`Database` not yet started. The default is :class:`~sqlite_gateway.Gateway`;
a benchmark passes another class with the same calls to run an app the old way."""


def check_factory(factory: object) -> DatabaseFactory:
    """``factory`` if it can make a database; checked when an integration is set up,
    before anything is opened.

    Raises:
        TypeError: ``factory`` is not callable.
    """
    if not callable(factory):
        raise TypeError("factory must be a callable that makes the database from "
                        f"(path, **options), such as Gateway; not {factory!r}")
    return factory


@dataclass(frozen=True)
class GatewaySettings:
    """Checked settings: what :meth:`open` passes to the gateway.

    Attributes:
        path: the database file, or None if the config gave none yet.
        options: Gateway keyword options, with their values converted.
        extra: the integration's own keys (see ``parse_settings(extra=)``).
        path_key: how the config names the path (for the message when it is missing).
    """

    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path_key: str = "path"

    def open(self, setup: Callable[[Database], object] | None = None,
             factory: DatabaseFactory = Gateway) -> Database:
        """Make the database with ``factory(path, **options)``, start it, then run
        ``setup(db)`` (e.g. the schema).

        Returns the started database. If setup raises, it is closed and the error
        re-raised.

        Raises:
            ValueError: no path was configured.
            apsw.Error: the file could not be opened.
        """
        if not self.path:
            raise ValueError(f"no database path: set {self.path_key} in the config")
        db: Database = factory(self.path, **self.options).start()
        try:
            if setup is not None:
                setup(db)
        except BaseException:
            db.close()
            raise
        return db


def parse_settings(config: Mapping[str, Any], *, prefix: str = "", upper: bool = False,
                   extra: Collection[str] = (), source: str | None = None) -> GatewaySettings:
    """Read the gateway's keys out of ``config`` and check them.

    Args:
        config: any mapping; only keys that start with ``prefix`` are read.
        prefix: e.g. ``"SQLITE_GATEWAY_"``; ``""`` when ``config`` holds
            only the gateway's keys.
        upper: the keys are upper case (``QUEUE_SIZE``), as in Flask.
        extra: further names the integration accepts; returned in ``.extra``.
        source: how messages name a key, with ``{}`` for its name
            (default: ``prefix + "{}"``).

    Returns:
        GatewaySettings; ``path`` may be None (the integration may get it later).

    Raises:
        ValueError: an unknown key, or a value out of range
            (Gateway's own check, run here without opening anything).
        TypeError: a value of the wrong type.
    """
    source = source or prefix + "{}"
    names = {name.upper() if upper else name: name
             for name in (*OPTIONS, "path", *extra)}
    found: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        name = names.get(key[len(prefix):])
        if name is None:
            known = ", ".join(sorted(prefix + n for n in names))
            raise ValueError(f"unknown setting {key!r}; known: {known}")
        found[name] = value

    def named(name: str) -> str:
        return source.format(name.upper() if upper else name)

    options = {name: _convert(named(name), kind, found[name])
               for name, kind in OPTIONS.items() if name in found}
    path = found.get("path")
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{named('path')} must be a file path, not {type(path).__name__}")
        path = os.fspath(path)
    settings = GatewaySettings(path=path, options=options,
                               extra={n: found[n] for n in extra if n in found},
                               path_key=named("path"))
    _check_ranges(settings, named)
    return settings


def _check_ranges(settings: GatewaySettings, named: Callable[[str], str]) -> None:
    """Run the options' own checks now (they open nothing), so a bad value fails
    at configuration time with its key."""
    try:
        if settings.path is not None:
            check_path(settings.path)
        Options(**settings.options)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for name in ("path", *settings.options):
            if message.startswith(name + " "):
                message = named(name) + message[len(name):]
                break
        raise type(exc)(message) from None


def _convert(key: str, kind: str, value: Any) -> Any:
    """``value`` as the option's type; text is parsed (``"30"``, ``"none"``, ``"off"``)."""
    if not kind:
        return value  # an option of a kind not listed here: Gateway checks it
    if kind == _FUNCTION:
        return _function(key, value)
    if kind == _BOOL:
        text = str(value).strip().lower() if isinstance(value, (str, bool, int)) else None
        if text in _TRUE or value is True:
            return True
        if text in _FALSE or value is False:
            return False
        raise ValueError(f"{key} must be {kind}, not {value!r}")
    if isinstance(value, str) and kind not in (_TEXT, _TEXT_OR_NONE):
        text = value.strip()
        if text.lower() in ("none", "") and kind == _SECONDS_OR_NONE:
            return None
        try:
            value = int(text) if kind == _INT else float(text)
        except ValueError:
            raise ValueError(f"{key} must be {kind}, not {value!r}") from None
    if value is None and kind in (_SECONDS_OR_NONE, _TEXT_OR_NONE):
        return None
    if kind == _INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in (_SECONDS, _SECONDS_OR_NONE):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise TypeError(f"{key} must be {kind}, not {value!r}")
    return value


def _function(key: str, value: Any) -> Any:
    """A function option: a callable as it is, none, or text naming one
    (``"package.module:function"``, imported now)."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{key} must be {_FUNCTION}, not {value!r}")
    text = value.strip()
    if text.lower() in ("none", ""):
        return None
    module_name, _, name = text.partition(":")
    if not module_name or not name:
        raise ValueError(f"{key} must be {_FUNCTION}, not {value!r}")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{key}: cannot import {text!r}: {exc}") from None
    if not callable(function):
        raise ValueError(f"{key}: {text!r} is not a function")
    return function
