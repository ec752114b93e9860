"""A real `tandem serve` with OTA releases made through the real CLI, for the device updater tests.

Models: ``faces`` v1 (tiny real ONNX, celebmatch gallery enrolled on LFW photos) and v2 (only the
classifier head changed, as after fine-tuning the head), both released on production, so a new
device gets v2 and a device pinned to v1 gets v1; ``rolling`` v1/v2 for the server-side rollback;
``staged`` v1 released to 30% of devices; ``cut`` v1, exported with splits at k=5 and k=7 (their heads
travel to the device with the model).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tandem.bundle import Bundle, write_manifest
from tandem.device import ModelUpdater
from tandem.export.split import split_bundle
from tandem.security.signing import PublicKey
from tandem.testing.bundles import make_bundle
from tandem.testing.processes import until
from tandem.testing.served import serve
from tests.conftest import make_folder_dataset
from tests.integration.cli import tandem, tandem_json

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]


def head_only(src: Path, dst: Path, factor: float = 1.1) -> Path:
    """A copy of bundle ``src`` whose classifier (w2) changed and nothing else, as after
    fine-tuning only the head: the embedding, and so the gallery, stay as they were."""
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    for init in model.graph.initializer:
        if init.name == "w2":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), "w2"))
    onnx.save(model, str(dst / "model.onnx"))
    write_manifest(dst, Bundle.load(dst, verify=False).manifest)
    return dst


@dataclass
class OtaServer:
    url: str
    env: dict[str, str]
    device_key: str
    trusted: list[PublicKey]
    bundles: dict[str, Path]
    proc: subprocess.Popen = field(repr=False)

    def cli(self, *args: object) -> Any:
        return tandem_json(*args, env=self.env)

    def updater(self, store: Path, **kw: Any) -> ModelUpdater:
        kw.setdefault("trusted_keys", self.trusted)
        return ModelUpdater(self.url, kw.pop("api_key", self.device_key), kw.pop("model", "faces"), store_dir=store,
                            app_version="2.4.0", platform="android", os_version="14", ram_mb=4096, timeout=30, **kw)

    def pin(self, device_id: str, version: int, model: str = "faces") -> None:
        self.cli("pin", model, device_id, version)

    def unpin(self, device_id: str, model: str = "faces") -> None:
        self.cli("unpin", model, device_id)


@pytest.fixture(scope="package")
def ota_server(tmp_path_factory, lfw_people) -> Iterator[OtaServer]:
    root = tmp_path_factory.mktemp("ota")
    faces = make_folder_dataset(root / "faces", lfw_people, PEOPLE, 5)
    bundles = {"v1": make_bundle(root / "v1", faces, seed=1)}
    bundles["v2"] = head_only(bundles["v1"], root / "v2")
    bundles["rolling1"] = make_bundle(root / "rolling1", None, name="rolling", seed=5)
    bundles["rolling2"] = head_only(bundles["rolling1"], root / "rolling2")
    bundles["staged"] = make_bundle(root / "staged", None, name="staged", seed=7)
    bundles["cut"] = make_bundle(root / "cut", None, name="cut", seed=9)
    split_bundle(bundles["cut"], [5, 7])
    env = {**os.environ, "TANDEM_HOME": str(root / "home"), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_ALIAS_POLL_S": "0.1", "TANDEM_OTA_REPORT_FLUSH_S": "0.2", "TANDEM_REDIS_URL": "",
           # Copies of one device store are one registered device here, in many tests at once.
           "TANDEM_PER_DEVICE_RATE_LIMIT_PER_S": "100000", "TANDEM_PER_DEVICE_RATE_LIMIT_BURST": "100000"}
    env.pop("TANDEM_OTA_MASTER_KEY", None)
    for name in ("v1", "v2", "rolling1", "staged", "cut"):
        tandem("push", bundles[name], env=env)
    for model, version, extra in (("faces", 1, ()), ("faces", 2, ()), ("rolling", 1, ()),
                                  ("staged", 1, ("--percent", "30")), ("cut", 1, ())):
        tandem("release", model, version, "--channel", "production", *extra, env=env)
    device_key = tandem_json("keys", "create", "--scope", "device", "--label", "phones", env=env)["key"]
    trusted = [PublicKey.from_b64(k["public_key"]) for k in tandem_json("keys", "signing", "list", env=env)]
    served = serve(env=env)
    try:
        yield OtaServer(served.url, env, device_key, trusted, bundles, served.proc)
    finally:
        served.stop()


@dataclass(frozen=True)
class OnV1:
    store: Path
    device_id: str
    envelope_v1: bytes  # the signed answer that installed v1: replayed later by the attack tests


class Recorder(httpx.BaseTransport):
    """The real network, with every check answer kept."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.checks: list[bytes] = []

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v1/ota/check" and response.status_code == 200:
            body = response.read()
            self.checks.append(body)
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        return response


@pytest.fixture(scope="package")
def on_v1(ota_server, tmp_path_factory) -> OnV1:
    """A device store holding faces v1 (installed while the device was pinned to v1, then
    unpinned, so the server now offers it v2). Tests copy it: each gets a device on v1."""
    store = tmp_path_factory.mktemp("device-on-v1") / "store"
    recorder = Recorder()
    with ota_server.updater(store, transport=recorder) as u:
        ota_server.pin(u.device_id, 1)
        until(lambda: (p := u.check()) is not None and p.version == 1, "the pin to v1")
        assert u.update().version == 1
        ota_server.unpin(u.device_id)
        until(lambda: (p := u.check()) is not None and p.version == 2, "the unpin")
        device_id = u.device_id
    installed_v1 = [c for c in recorder.checks if c and _payload(c)["version"] == 1 and _payload(c)["action"] == "install"][-1]
    return OnV1(store, device_id, installed_v1)


def _payload(envelope: bytes) -> dict:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))
