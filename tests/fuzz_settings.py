"""Hypothesis profiles for the fuzz tests: ``ci`` (default) and ``long``.

Select one with the environment variable ``HYPOTHESIS_PROFILE``::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -q -s -k random \
        tests/test_fuzz.py tests/test_webapp_bad_input.py --hypothesis-show-statistics

(``-s`` shows the counts the tests print: examples and calls per test.)

``ci`` keeps each fuzz test file well under a minute on 2 cores; ``long`` runs
many more examples, for the figures docs/benchmarks.md quotes. The gateway's calls are
not fast enough for hypothesis's per-example deadline to mean anything, and
every call in the tests has its own timeout, so the deadline is off.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=60, stateful_step_count=12, **_COMMON)
settings.register_profile("long", max_examples=3000, stateful_step_count=30, **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
# pytest-timeout for one fuzz test: a hang detector, with room for the long profile.
TIMEOUT = 300 if PROFILE == "ci" else 3600


def examples(ci: int) -> int:
    """``ci`` examples under the ci profile; the profile's own number otherwise."""
    return ci if PROFILE == "ci" else settings().max_examples
