"""Real variants over the air, against a real `tandem serve`: the session's variant bundle
(tests/integration/conftest.py: a classifier trained on LFW photos, exported with LiteRT, ExecuTorch and
Core ML variants) pushed and released; ``ModelUpdater(runtime="litert")`` installing only its ``.tflite`` file,
encrypted at rest, and ``HybridModel`` running it with ai-edge-litert, answering as the bundle's own LiteRT
model does and within the variant's parity of ONNX; the ExecuTorch and Core ML files answered per platform.
Marked ``litert``, ``executorch`` and ``coreml``: the bundle needs their converters (make install), and the
export fails without them."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tandem.bundle import Bundle
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.runtime import OnnxModel
from tandem.device import HybridModel, ModelUpdater
from tandem.device.variants import LiteRtLocal
from tandem.errors import ConfigError
from tandem.security.signing import PublicKey
from tandem.testing.served import serve
from tests.integration.cli import tandem, tandem_json
from tests.integration.conftest import VARIANT_PEOPLE

pytestmark = [pytest.mark.integration, pytest.mark.litert, pytest.mark.executorch, pytest.mark.coreml]


@dataclass
class VariantServer:
    url: str
    device_key: str
    admin_key: str
    trusted: list[PublicKey]
    bundle: Bundle

    def updater(self, store: Path, **kw) -> ModelUpdater:
        return ModelUpdater(self.url, self.device_key, self.bundle.manifest.name, trusted_keys=self.trusted,
                            store_dir=store, platform="android", os_version="14", app_version="2.4.0", ram_mb=4096,
                            timeout=30, **kw)


@pytest.fixture(scope="module")
def variant_server(tmp_path_factory, variant_bundle) -> Iterator[VariantServer]:
    home = tmp_path_factory.mktemp("variant-ota")
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_REDIS_URL": "", "TANDEM_ALIAS_POLL_S": "0.1"}
    env.pop("TANDEM_OTA_MASTER_KEY", None)
    bundle = Bundle.load(variant_bundle)
    tandem("push", variant_bundle, env=env)
    tandem("release", bundle.manifest.name, 1, env=env)
    device_key = tandem_json("keys", "create", "--scope", "device", "--label", "phones", env=env)["key"]
    admin_key = tandem_json("keys", "create", "--scope", "admin", "--label", "operator", env=env)["key"]
    trusted = [PublicKey.from_b64(k["public_key"]) for k in tandem_json("keys", "signing", "list", env=env)]
    served = serve(env=env)
    try:
        yield VariantServer(served.url, device_key, admin_key, trusted, bundle)
    finally:
        served.stop()


@pytest.fixture(scope="module")
def pixels(variant_bundle, lfw_people) -> np.ndarray:
    photos = [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in VARIANT_PEOPLE]  # photos it never trained on
    return OnnxModel.open(Bundle.load(variant_bundle)).pixels_from_files(photos)


def test_the_sdk_installs_the_litert_variant_and_runs_it(variant_server, tmp_path, pixels):
    bundle = variant_server.bundle
    with variant_server.updater(tmp_path / "store", runtime="litert") as u:
        result = u.update()
        assert (result.status, result.version) == ("installed", 1)
        assert set(result.sources) == {"manifest.json", "model.tflite"}  # the LiteRT file alone, no ONNX model
        stored = {p.name for p in (tmp_path / "store" / bundle.manifest.name / "versions" / "1").iterdir()}
        assert "model.tflite.tde" in stored and "model.tflite" not in stored  # encrypted at rest
        loaded = u.load()
        assert loaded.variant == "litert-fp32" and isinstance(loaded.model, LiteRtLocal)
        with pytest.raises(ConfigError, match="no ONNX Runtime session"):
            _ = loaded.session
        want = LiteRtModel.open(bundle).run(pixels)
        got = loaded.model.run(pixels)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])

        answer = HybridModel(u, policy="only_device").predict(list(pixels))
        assert answer.where == "device" and answer.version == 1
        onnx = OnnxModel.open(bundle).run(pixels)["probabilities"]
        parity = bundle.manifest.variants["litert-fp32"].parity
        assert parity is not None and np.abs(answer.probabilities - onnx).max() <= max(1e-4, parity.max_abs * 2)
        assert [g[0].label for g in answer.top_k(1)] == [g[0].label for g in OnnxModel.open(bundle).top_k(onnx, 1)]
        assert u.update().status == "current"

    # The same device's app moves to ONNX Runtime: it asks for that runtime's model of the same version.
    with variant_server.updater(tmp_path / "store", runtime="onnx") as u:
        assert set(u.update().sources) == {"manifest.json", "model.onnx"}
        assert isinstance(u.load().model, OnnxModel)


def test_the_int8_litert_variant_and_a_bundle_folder(variant_server, variant_bundle, tmp_path, pixels):
    with variant_server.updater(tmp_path / "store", runtime="litert", precision="int8") as u:
        assert set(u.update().sources) == {"manifest.json", "model.int8.tflite"}
        loaded = u.load()
        assert loaded.variant == "litert-int8"
        np.testing.assert_array_equal(loaded.model.run(pixels)["probabilities"],
                                      LiteRtModel.open(variant_server.bundle, "int8").run(pixels)["probabilities"])
    local = HybridModel(variant_bundle, runtime="litert", precision="int8").predict(list(pixels), "only_device")
    assert local.probabilities.shape == (len(pixels), len(VARIANT_PEOPLE))
    with pytest.raises(ConfigError, match="runs onnx or litert models, not 'coreml'"):
        variant_server.updater(tmp_path / "other", runtime="coreml")


@pytest.mark.parametrize(("platform", "runtime", "precision", "variant", "file"), [
    ("ios", "coreml", "fp32", "coreml-fp16", "model.mlpackage.zip"),
    ("android", "executorch", "int8", "executorch-int8", "model.int8.pte"),
    ("web", "onnx", "int8", "onnx-int8", "model.int8.onnx"),
])
def test_native_runtimes_get_their_variant_file_alone(variant_server, platform, runtime, precision, variant, file):
    body = {"model": variant_server.bundle.manifest.name, "device_id": f"{platform}-1", "platform": platform,
            "runtime": runtime, "precision": precision, "schema": 2}
    r = httpx.post(f"{variant_server.url}/v1/ota/check", json=body, timeout=30,
                   headers={"authorization": f"Bearer {variant_server.admin_key}"})
    assert r.status_code == 200, r.text
    payload = json.loads(base64.b64decode(r.json()["payload"]))
    assert (payload["variant"], set(payload["files"])) == (variant, {"manifest.json", file})
    assert payload["files"][file]["sha256"] == variant_server.bundle.manifest.files[file].sha256
