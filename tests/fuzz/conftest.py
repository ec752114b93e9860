"""Hypothesis profiles for the parser fuzzers.

``ci`` (default): derandomized, so every run tries the same inputs and a failure reproduces; the
example counts keep all fuzzers within about a minute. ``long`` (HYPOTHESIS_PROFILE=long, used by
bench/hardening.py together with TANDEM_FUZZ_SCALE): fresh random inputs on every run.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

from tests.fuzz import tally

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("long", derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    out = os.environ.get("TANDEM_FUZZ_TALLY")
    if out:
        tally.write(Path(out))
