"""Rate limits per key (in-process and shared through Redis), the per-request time limit and the model queue's
budget (TANDEM_MAX_QUEUE_MS)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from tandem.registry.registry import Registry
from tandem.server.ratelimit import LocalLimiter, RedisLimiter
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
PIX = np.zeros((1, 100, 75, 3), np.uint8)
_HEAD = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3],
                                "parameters": {"binary_data_size": PIX.nbytes}}]}).encode()
INFER = {"content": _HEAD + PIX.tobytes(), "headers": {"Inference-Header-Content-Length": str(len(_HEAD))}}
# A bucket of 3 that refills one token per 100 s: the fourth request within a test is always refused.
STRICT = {"rate_limit_burst": 3, "rate_limit_per_s": 0.01}


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {e}")


def test_local_bucket_allows_the_burst_then_says_when_to_retry():
    async def main():
        lim = LocalLimiter(rate=0.01, burst=2)  # a token per 100 s: a stalled machine cannot refill one
        return [await lim.take("k") for _ in range(3)], await lim.take("other")

    waits, other = asyncio.run(main())
    assert waits[:2] == [0.0, 0.0] and 95 < waits[2] <= 100 and other == 0.0


def test_device_keys_get_the_fleet_sized_bucket():
    """A device key ships inside an app and is shared by every install: its bucket is sized by
    TANDEM_DEVICE_RATE_LIMIT_*, not by the per-client limit that predict keys get."""
    s = test_settings(Path("/nonexistent"), rate_limit_burst=2, rate_limit_per_s=0.01, device_rate_limit_burst=5, device_rate_limit_per_s=0.01)
    assert s.rate_for("predict") == (0.01, 2) and s.rate_for("admin") == (0.01, 2)
    assert s.rate_for("device") == (0.01, 5)

    async def main():
        lim = LocalLimiter(*s.rate_for("predict"))
        device = [await lim.take("fleet", *s.rate_for("device")) for _ in range(6)]
        client = [await lim.take("client") for _ in range(3)]
        return device, client

    device, client = asyncio.run(main())
    assert device[:5] == [0.0] * 5 and device[5] > 0
    assert client[:2] == [0.0, 0.0] and client[2] > 0


def test_redis_bucket_is_atomic_across_limiters_and_holds_per_worker_when_redis_is_down(caplog):
    redis_or_skip()

    async def main():
        a, b = RedisLimiter(REDIS_URL, 0.01, 3), RedisLimiter(REDIS_URL, 0.01, 3)
        key = f"test-{np.random.default_rng().integers(1 << 60)}"
        waits = await asyncio.gather(*(lim.take(key) for lim in (a, b) * 4))
        errors = []
        down = RedisLimiter("redis://127.0.0.1:1/0", 0.01, 2, on_error=lambda: errors.append(1))
        during_outage = [await down.take(key) for _ in range(4)]
        for lim in (a, b, down):
            await lim.close()
        return waits, during_outage, errors

    with caplog.at_level("WARNING", logger="tandem.server.ratelimit"):
        waits, during_outage, errors = asyncio.run(main())
    assert sorted(w == 0 for w in waits) == [False] * 5 + [True] * 3
    assert all(95 < w <= 100 for w in waits if w > 0)
    # Redis unreachable: this worker's own buckets limit (burst 2), not nothing; said once, counted each time.
    assert during_outage[:2] == [0.0, 0.0] and all(w > 0 for w in during_outage[2:])
    assert errors == [1] * 4
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture(scope="module")
def home(tmp_path_factory, bundles):
    settings = test_settings(tmp_path_factory.mktemp("home"))
    populate(settings, list(bundles))
    return settings.home


def new_key(home, scope="predict") -> str:
    with Registry.open(test_settings(home)) as reg:
        return reg.create_key(scope, "limits")[0]


def test_rate_limit_per_key_answers_429_with_retry_after(home):
    with running(test_settings(home, **STRICT)) as server:
        a, b = new_key(home), new_key(home)
        with server.client(a) as ca, server.client(b) as cb:
            codes = [ca.post("/v2/models/faces/infer", **INFER).status_code for _ in range(3)]
            refused = ca.post("/v2/models/faces/infer", **INFER)
            other = cb.post("/v2/models/faces/infer", **INFER)
            health = [ca.get("/v2/health/live").status_code for _ in range(5)]
    assert codes == [200, 200, 200] and other.status_code == 200 and health == [200] * 5
    assert refused.status_code == 429 and 95 <= int(refused.headers["retry-after"]) <= 100
    assert f"rate limit for key {a.split('_')[1]} reached" in refused.json()["error"]
    assert f"retry in {refused.headers['retry-after']} s" in refused.json()["error"]  # body and header agree


def test_two_servers_share_one_limit_through_redis(home):
    redis_or_skip()
    settings = test_settings(home, redis_url=REDIS_URL, **STRICT)
    with running(settings) as one, running(settings) as two:
        key = new_key(home)
        with one.client(key) as c1, two.client(key) as c2:
            codes = [c.post("/v2/models/faces/infer", **INFER).status_code for c in (c1, c2) * 3]
    assert codes == [200, 200, 200, 429, 429, 429]


def test_a_request_over_its_time_limit_gets_504(home):
    with running(test_settings(home, request_timeout_s=1e-9)) as server, server.client(new_key(home)) as c:
        r = c.post("/v2/models/faces/infer", **INFER)
    assert r.status_code == 504 and "took longer than 1e-09 s (TANDEM_REQUEST_TIMEOUT_S)" in r.json()["error"]


def shed_rows(n: int) -> dict:
    """A binary OIP request of ``n`` zero photos: each is one model call's worth of work on its own."""
    pix = np.zeros((n, 100, 75, 3), np.uint8)
    head = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(pix.shape),
                                   "parameters": {"binary_data_size": pix.nbytes}}]}).encode()
    return {"content": head + pix.tobytes(), "headers": {"Inference-Header-Content-Length": str(len(head))}}


def test_a_model_queue_over_its_budget_answers_503_with_retry_after_and_counts_it(home):
    """Sixteen clients in a closed loop on one model call at a time, with a queue budget of a microsecond
    (so, in effect, two of the model's call times): the requests that would wait behind several
    others are answered 503 with Retry-After at once, counted by reason, and logged as 503; the rest
    are answered, and nothing else goes wrong."""
    rows = 256  # ~20 ms of model per request here: the model, not HTTP, is the bottleneck
    req = shed_rows(rows)
    access: list[dict] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            access.append(json.loads(record.getMessage()))

    handler = Lines()
    settings = test_settings(home, max_queue_ms=0.001, max_batch_size=rows, batches_in_flight=1, access_log=True)
    with running(settings) as server:
        logging.getLogger("tandem.access").addHandler(handler)
        try:
            key, admin = new_key(home), new_key(home, "admin")

            def client(_: int) -> list[httpx.Response]:
                with server.client(key) as c:
                    return [c.post("/v2/models/faces/infer", **req) for _ in range(6)]

            with ThreadPoolExecutor(16) as pool:
                answers = [r for rs in pool.map(client, range(16)) for r in rs]
            with server.client(admin) as c:
                metrics = c.get("/metrics").text
        finally:
            logging.getLogger("tandem.access").removeHandler(handler)
    statuses = [r.status_code for r in answers]
    shed = [r for r in answers if r.status_code == 503]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 and shed, statuses
    for r in shed:
        assert r.headers["retry-after"] == "1" and "TANDEM_MAX_QUEUE_MS" in r.json()["error"]
        assert "model faces-1 is behind" in r.json()["error"]
    counted = {reason: float(m.group(1)) for reason in ("queue_timeout", "expected_wait")
               if (m := re.search(rf'tandem_shed_requests_total{{model="faces",reason="{reason}",version="1"}} (\S+)',
                                  metrics))}
    assert sum(counted.values()) == len(shed), (counted, len(shed))
    logged = [line["status"] for line in access if line.get("route", "").startswith("/v2/models/")]
    assert logged.count(503) == len(shed) and logged.count(200) == statuses.count(200)
