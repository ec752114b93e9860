"""The registry's PostgreSQL going away under steady traffic and coming back: 200 or 503 with
Retry-After throughout, and requests succeed again once it is back, without restarting the server
(tests/faults/database_faults.py). Two ways: a relay in front of the shared PostgreSQL cut (that
server itself is never stopped), and a private cluster really stopped, fast and then immediately."""

from __future__ import annotations

import pytest

from tandem.testing.bundles import make_bundle
from tests.faults import database_faults

pytestmark = pytest.mark.integration


def test_a_database_outage_under_load_is_503_with_retry_after_then_recovers(tmp_path):
    bundles = [make_bundle(tmp_path / "v1", None, seed=1)]
    outage = database_faults.outage_under_load(tmp_path, bundles)
    assert outage.problems == [], outage.problems[:10]
    assert outage.answers[200] > 0 and outage.during[503] > 0, outage


def test_postgresql_stopped_and_started_under_load_is_503_then_recovers_without_a_restart(tmp_path):
    bundles = [make_bundle(tmp_path / "v1", None, seed=1)]
    outages = database_faults.stopped_under_load(tmp_path, bundles, modes=database_faults.STOP_MODES)
    for mode, outage in zip(database_faults.STOP_MODES, outages, strict=True):
        print(f"pg_ctl stop -m {mode}: during the outage {dict(outage.during)}, down {outage.down_s:.2f} s, "
              f"answering again {outage.recovered_s} s after PostgreSQL accepted connections")
        assert outage.problems == [], outage.problems[:10]
        assert outage.during[503] > 0 and outage.answers[200] > 0, outage
