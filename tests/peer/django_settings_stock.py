"""Settings for Django's own test suite on the stock ``django.db.backends.sqlite3``.

File databases (not Django's default in-memory ones) in ``$DJANGO_PEER_DB_DIR``, so
the stock run and the gateway run test the same thing: a database file on disk.
"""

import os

_DIR = os.environ.get("DJANGO_PEER_DB_DIR", ".")


def _database(alias: str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_DIR, f"{alias}.sqlite3"),
        "TEST": {"NAME": os.path.join(_DIR, f"test_{alias}.sqlite3")},
    }


DATABASES = {"default": _database("default"), "other": _database("other")}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
