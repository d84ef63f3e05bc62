"""Settings for Django's own test suite on the gateway backend.

The same file databases as ``settings_stock``, with only ENGINE changed.
"""

from settings_stock import *  # noqa: F401,F403
from settings_stock import DATABASES

for _settings in DATABASES.values():
    _settings["ENGINE"] = "sqlite_gateway.integrations.django"
