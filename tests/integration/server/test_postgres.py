"""The server over a PostgreSQL registry (127.0.0.1:5432, database `test`, a schema of its own)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.http as triton

from tandem.bundle import Bundle
from tandem.registry.registry import Registry
from tandem.runtime import OnnxModel
from tests.integration.registry_backends import postgres_schema
from tests.integration.server.serving import Bearer, populate, running, test_settings

pytestmark = pytest.mark.integration


def test_serving_from_postgresql_follows_its_aliases(tmp_path, bundles, photos):
    with postgres_schema() as url:
        settings = test_settings(tmp_path / "home", database_url=url)
        keys = populate(settings, list(bundles), production=1)
        models = [OnnxModel.open(Bundle.load(b)) for b in bundles]
        pixels = models[0].pixels_from_files(photos)
        with running(settings) as server:
            client = triton.InferenceServerClient(server.host_port)
            client.register_plugin(Bearer(keys.predict))
            try:
                assert client.is_server_ready() and client.get_model_metadata("faces")["versions"] == ["1", "2"]
                with server.client(keys.predict) as http:  # what PostgreSQL cannot store never reaches it
                    r = http.get("/v2/models/fa%00ces/versions/99999999999")
                    assert r.status_code == 404 and "no model named" in r.json()["error"]
                    r = http.get("/v2/models/faces/versions/99999999999")
                    assert r.status_code == 404 and "has no version 99999999999" in r.json()["error"]

                def infer() -> tuple[str, np.ndarray]:
                    inp = triton.InferInput("pixels", list(pixels.shape), "UINT8")
                    inp.set_data_from_numpy(pixels)
                    res = client.infer("faces", [inp], outputs=[triton.InferRequestedOutput("embedding")])
                    return res.get_response()["model_version"], res.as_numpy("embedding")

                version, emb = infer()
                assert version == "1" and np.abs(emb - models[0].run(pixels)["embedding"]).max() <= 1e-5
                with Registry.open(settings) as reg:
                    reg.set_alias("faces", "production", 2)
                deadline = time.monotonic() + 30
                while (version := infer()[0]) == "1" and time.monotonic() < deadline:
                    time.sleep(0.05)
                version, emb = infer()
                assert version == "2" and np.abs(emb - models[1].run(pixels)["embedding"]).max() <= 1e-5
            finally:
                client.close()
