"""A key's own rate limit and expiry on a real server: a key created with --rate 5 --burst 5 gets 429
after its burst while another key goes on under the server's default; an expiring key (predict or the
fleet's device key) is refused at its expiry although the worker still trusts its cached check, with
its own message, and counted as expired_token."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tandem.registry.registry import Registry
from tandem.settings import Settings
from tests.integration.server.serving import Keys, populate, running, test_settings
from tests.integration.server.test_limits import REDIS_URL, redis_or_skip

pytestmark = pytest.mark.integration


def home(tmp_path: Path, redis_url: str | None = None) -> tuple[Settings, Keys]:
    """A registry with no models (nothing to load: the server starts at once), and the server's settings:
    the default limits and key cache, its buckets in this worker or in Redis."""
    settings = test_settings(tmp_path / "home", rate_limit_per_s=1000.0, rate_limit_burst=2000, key_cache_s=5.0,
                             redis_url=redis_url)
    return settings, populate(settings, [], production=None)


@pytest.mark.parametrize("buckets", ["local", "redis"])
def test_a_key_with_its_own_rate_gets_429_after_its_burst_while_another_does_not(tmp_path, buckets):
    if buckets == "redis":
        redis_or_skip()
    settings, keys = home(tmp_path, REDIS_URL if buckets == "redis" else None)
    with Registry.open(settings) as reg:
        limited, info = reg.create_key("predict", "limited", rate_per_s=5, burst=5)
    with running(settings) as server, server.client(limited) as mine, server.client(keys.predict) as other:
        t0 = time.monotonic()
        codes = [mine.get("/v2").status_code for _ in range(20)]
        elapsed = time.monotonic() - t0
        refused = mine.get("/v2")
        others = [other.get("/v2").status_code for _ in range(20)]
    assert codes[:5] == [200] * 5 and 429 in codes, codes
    # Past the burst, no more than the refill (5/s) over the time the requests took, and one for rounding.
    assert codes.count(200) <= 5 + 5 * elapsed + 1, (codes, elapsed)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 1
    assert f"rate limit for key {info.key_id} reached; retry in 1 s" in refused.json()["error"]
    assert others == [200] * 20  # the server's default bucket, untouched by the other key's


def _metric(text: str, reason: str) -> float:
    m = re.search(rf'^tandem_auth_failures_total{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_an_expiring_key_stops_at_its_expiry_though_its_check_is_cached(tmp_path):
    settings, keys = home(tmp_path)
    with running(settings) as server:
        with Registry.open(settings) as reg:
            expires = datetime.now(UTC) + timedelta(seconds=1.5)
            predict, info = reg.create_key("predict", "soon", expires=expires)
            device = reg.create_key("device", "fleet, soon", expires=expires)[0]
        with server.client(predict) as c, server.client(device) as d, server.client(keys.admin) as admin:
            assert c.get("/v2").status_code == 200  # checked now, and trusted by this worker for 5 s
            assert d.post("/v1/devices").status_code == 201  # the fleet's key registers devices until then
            time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
            r = c.get("/v2")
            enrol = d.post("/v1/devices")
            assert admin.get("/v2").status_code == 200  # keys without an expiry go on
            metrics = admin.get("/metrics").text
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == ('Bearer realm="tandem", error="invalid_token", '
                                             'error_description="the API key expired"')
    assert r.json()["error"] == (f"API key {info.key_id} expired at {expires:%Y-%m-%d %H:%M:%S} UTC; create a new "
                                 "one with `tandem keys create`")
    assert enrol.status_code == 401 and "expired at" in enrol.json()["error"]
    assert _metric(metrics, "expired_token") == 2 and _metric(metrics, "invalid_token") == 0
