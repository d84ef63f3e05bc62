"""Test databases for the gateway backend (imports Django).

As Django's sqlite3 creation, with what a gateway needs:

- the test database is a file (the gateway needs WAL): ``TEST["NAME"]``, or
  ``test_<NAME>`` beside ``NAME`` (the stock backend would use ``:memory:``);
- the gateway of a file is closed before the file is removed, and its ``-wal``
  and ``-shm`` files go with it;
- a clone for ``--parallel`` is copied after a checkpoint (the copy must hold
  what the WAL holds);
- the test database is opened with no hold limit worth the name (an hour) and
  no watchdog: Django's ``TestCase`` holds one transaction (a write block) for
  each test class. Set them in ``OPTIONS`` to choose otherwise.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from django.db.backends.sqlite3.creation import DatabaseCreation as Sqlite3Creation

from ..registry import close as close_path

__all__ = ["DatabaseCreation"]

TEST_OPTIONS = {"hold_limit": 3600.0, "hang_timeout": None}
"""Options the test database gets unless its OPTIONS set them."""


def remove_database(path: str) -> None:
    """Close this process's gateway on ``path`` and remove the file, -wal and -shm."""
    close_path(path)
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.remove(name)


class DatabaseCreation(Sqlite3Creation):
    def _get_test_db_name(self) -> str:
        name = self.connection.settings_dict["TEST"]["NAME"]
        if not name or self.is_in_memory_db(name):
            base = str(self.connection.settings_dict["NAME"])
            name = os.path.join(os.path.dirname(base), "test_" + os.path.basename(base))
        return str(name)

    def create_test_db(self, *args: Any, **kwargs: Any) -> str:
        options = self.connection.settings_dict.setdefault("OPTIONS", {})
        for key, value in TEST_OPTIONS.items():
            options.setdefault(key, value)
        return super().create_test_db(*args, **kwargs)  # type: ignore[no-any-return]

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> str:
        name = self._get_test_db_name()
        if not keepdb and os.path.exists(name):
            if not autoclobber:
                confirm = input("Type 'yes' if you would like to try deleting the test "
                                f"database '{name}', or 'no' to cancel: ")
                if confirm != "yes":
                    self.log("Tests cancelled.")
                    raise SystemExit(1)
            if verbosity >= 1:
                self.log(f"Destroying old test database for alias "
                         f"{self._get_database_display_str(verbosity, name)}...")
            remove_database(name)
        return name

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        source = self.connection.settings_dict["NAME"]
        target = self.get_test_db_clone_settings(suffix)["NAME"]
        if os.path.exists(target):
            if keepdb:
                return
            remove_database(target)
        # Everything committed into the main file, so that copying it copies the data.
        self.connection.gateway().run_exclusive(
            lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        shutil.copy(source, target)

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        remove_database(test_database_name)
