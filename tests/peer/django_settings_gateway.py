"""Settings for Django's own test suite on the gateway backend.

The same file databases as ``django_settings_stock``, with only ENGINE changed.
"""

from django_settings_stock import *  # noqa: F401,F403
from django_settings_stock import DATABASES

for _settings in DATABASES.values():
    _settings["ENGINE"] = "sqlite_gateway.integrations.django"
