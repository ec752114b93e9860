"""Moving an alias under load: 8 clients keep calling while `tandem alias` moves production from
v1 to v2. No request fails, no client goes back to v1 once it saw v2, every answer is exactly
its version's, and afterwards production serves v2 while v1 stays addressable by number."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tests.integration.cli import tandem
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration
CLIENTS = 8


def infer_body(pixels: np.ndarray) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape),
                                   "parameters": {"binary_data_size": pixels.nbytes}}],
                       "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return head + pixels.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def decode(r) -> tuple[str, np.ndarray]:
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    return head["model_version"], np.frombuffer(r.content[n:], np.float32).reshape(head["outputs"][0]["shape"])


def test_alias_swap_under_load_loses_no_request(tmp_path, bundles, photos):
    settings = test_settings(tmp_path / "home", alias_poll_s=0.05, rate_limit_per_s=1e6, rate_limit_burst=10**6)
    keys = populate(settings, list(bundles), production=1)
    models = [OnnxModel.open(Bundle.load(b)) for b in bundles]
    pixels = models[0].pixels_from_files(photos[:1])
    want = {str(i + 1): m.run(pixels)["probabilities"] for i, m in enumerate(models)}
    assert np.abs(want["1"] - want["2"]).max() > 1e-3  # the two versions are told apart by their answers
    body, headers = infer_body(pixels)
    stop = threading.Event()
    seen: list[list[tuple[int, str, np.ndarray | None]]] = [[] for _ in range(CLIENTS)]

    with running(settings) as server:
        def client(i: int) -> None:
            with server.client(keys.predict) as c:
                while not stop.is_set():
                    r = c.post("/v2/models/faces/infer", content=body, headers=headers)
                    seen[i].append((r.status_code, *decode(r)) if r.status_code == 200 else (r.status_code, r.text, None))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            while min(len(s) for s in seen) < 5:  # every client is under way on v1
                time.sleep(0.01)
            tandem("alias", "faces", "production", "2", env={"TANDEM_HOME": str(settings.home), "TANDEM_DATABASE_URL": ""})
            # Keep the load on until every client has had a few answers from v2.
            deadline = time.monotonic() + 60
            while not all(sum(v == "2" for _, v, _ in s[-3:]) == 3 for s in seen) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(30)

        with server.client(keys.predict) as c:
            after = decode(c.post("/v2/models/faces/infer", content=body, headers=headers))
            old = decode(c.post("/v2/models/faces/versions/1/infer", content=body, headers=headers))

    total = sum(len(s) for s in seen)
    assert total > 5 * CLIENTS
    for s in seen:
        assert all(code == 200 for code, _, _ in s), [x[:2] for x in s if x[0] != 200][:3]
        versions = [v for _, v, _ in s]
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions)  # once on v2, never back to v1
        for _, v, probs in s:
            assert np.abs(probs - want[v]).max() <= 1e-5
    assert after[0] == "2" and np.abs(after[1] - want["2"]).max() <= 1e-5
    assert old[0] == "1" and np.abs(old[1] - want["1"]).max() <= 1e-5


def test_versions_no_alias_uses_are_unloaded_when_idle_and_reload_on_demand(tmp_path, bundles, photos):
    settings = test_settings(tmp_path / "home", alias_poll_s=0.05, model_idle_s=0.2)
    keys = populate(settings, list(bundles), production=1)
    body, headers = infer_body(np.zeros((1, 100, 75, 3), np.uint8))
    with running(settings) as server, server.client(keys.predict) as c, server.client(keys.admin) as admin:
        assert decode(c.post("/v2/models/faces/versions/2/infer", content=body, headers=headers))[0] == "2"
        loaded = 'tandem_model_loaded{model="faces",version="%s"} %s'
        assert loaded % ("2", "1.0") in admin.get("/metrics").text
        deadline = time.monotonic() + 30
        while loaded % ("2", "0.0") not in (text := admin.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loaded % ("2", "0.0") in text and loaded % ("1", "1.0") in text  # production's version stays
        assert decode(c.post("/v2/models/faces/versions/2/infer", content=body, headers=headers))[0] == "2"
