"""Settings: the stock ones of a one-app project, with the gateway as the database ENGINE.

The database file is ``$COUNTER_DB`` (default: ``counter.sqlite3`` beside manage.py).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("COUNTER_SECRET_KEY", "only-for-the-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["counter"]
ROOT_URLCONF = "counter.urls"
WSGI_APPLICATION = "counter.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "sqlite_gateway.integrations.django",  # was django.db.backends.sqlite3
        "NAME": os.environ.get("COUNTER_DB", BASE_DIR / "counter.sqlite3"),
        "OPTIONS": {"timeout": 10},  # gateway options; see docs/django.md
    }
}
