"""The registry's PostgreSQL cut and restored under steady traffic (through a relay: the shared
PostgreSQL server itself is never stopped): 200 or 503 with Retry-After throughout, and requests
succeed again once it is back, without restarting the server (tests/faults/database_faults.py)."""

from __future__ import annotations

import pytest

from tests.faults import database_faults
from tests.integration.server.bundles import make_bundle

pytestmark = pytest.mark.integration


def test_a_database_outage_under_load_is_503_with_retry_after_then_recovers(tmp_path):
    bundles = [make_bundle(tmp_path / "v1", None, seed=1)]
    problems, answers = database_faults.outage_under_load(tmp_path, bundles)
    assert problems == [], problems[:10]
    assert answers[200] > 0 and answers[503] > 0, answers
