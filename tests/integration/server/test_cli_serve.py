"""`tandem serve` end to end: two worker processes sharing one rate limit through Redis, with their
metrics added up, driven by tritonclient."""

from __future__ import annotations

import os
import re

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tandem.registry.registry import Registry
from tandem.testing.served import serve
from tests.integration.server.serving import Bearer, populate, test_settings
from tests.integration.server.test_limits import REDIS_URL, redis_or_skip

pytestmark = pytest.mark.integration


def test_serve_with_two_workers_shares_the_rate_limit_and_the_metrics(tmp_path, bundles):
    redis_or_skip()
    settings = test_settings(tmp_path / "home")
    keys = populate(settings, list(bundles))
    env = {**os.environ, "TANDEM_HOME": str(settings.home), "TANDEM_REDIS_URL": REDIS_URL,
           "TANDEM_RATE_LIMIT_BURST": "3", "TANDEM_RATE_LIMIT_PER_S": "0.01", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_DATABASE_URL": "", "TANDEM_MAX_BATCH_SIZE": "16", "TANDEM_MAX_DELAY_MS": "3"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = serve("--workers", "2", "--max-batch-size", "4", env=env, timeout_s=90)
    url = server.url
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        client.register_plugin(Bearer(keys.predict))
        try:
            pixels = np.zeros((2, 100, 75, 3), np.uint8)
            inp = triton.InferInput("pixels", list(pixels.shape), "UINT8")
            inp.set_data_from_numpy(pixels)
            assert client.infer("faces", [inp]).as_numpy("probabilities").shape == (2, 4)
        finally:
            client.close()

        with Registry.open(settings) as reg:
            limited = reg.create_key("predict", "limited")[0]
            readers = [reg.create_key("predict", f"config {i}")[0] for i in range(6)]  # a bucket each
        # Whichever worker answers has the option (over the environment's 16) and the environment's other
        # settings: the Settings object the command built travels to the workers.
        for key in readers:
            config = httpx.get(f"{url}/v2/models/faces/config", headers={"authorization": f"Bearer {key}"})
            assert config.status_code == 200, config.text
            assert config.json()["max_batch_size"] == 4
            assert config.json()["dynamic_batching"] == {"max_queue_delay_microseconds": 3000}
        # A new connection per request, so that both workers take some of them.
        codes = [httpx.get(f"{url}/v2/models/faces", headers={"authorization": f"Bearer {limited}"}).status_code
                 for _ in range(8)]
        assert sorted(codes) == [200] * 3 + [429] * 5
        metrics = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {keys.admin}"}).text
        served = [float(v) for v in re.findall(r'tandem_requests_total\{model="[^"]*",route="/v2/models/\{name\}",'
                                                r'status="(?:200|429)"\} ([0-9.e+]+)', metrics)]
        assert sum(served) >= 8  # every worker's counts, added up
    finally:
        server.stop()
