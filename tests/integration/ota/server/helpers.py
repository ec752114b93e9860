"""What the OTA tests share: a registry with pushed versions, bundles that differ only in their head,
and a device's side of the protocol, checked as the SDK checks it (signature before parsing)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import numpy_helper

from tandem.bundle import Bundle, write_manifest
from tandem.registry.ota import Ota
from tandem.registry.ota.devices import Devices
from tandem.registry.registry import Registry
from tandem.security import encryption
from tandem.security.signing import PublicKey, verify_envelope
from tandem.settings import Settings
from tests.integration.server.serving import Keys, Running, running, test_settings

SYNC_DEADLINE_S = 30


def head_update(src: Path, dst: Path, seed: int) -> Path:
    """A copy of bundle ``src`` whose classifier head (initializer w2) has new weights: a fine-tune."""
    shutil.copytree(src, dst)
    bundle = Bundle.load(dst)
    model = onnx.load(str(dst / "model.onnx"))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "w2":
            old = numpy_helper.to_array(init)
            new = np.random.default_rng(seed).normal(0, 3, old.shape).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(new, "w2"))
    (dst / "model.onnx").unlink()  # the copy may share its inode with nothing, but write a new file anyway
    onnx.save(model, str(dst / "model.onnx"))
    write_manifest(dst, bundle.manifest.model_copy(update={"parent_version": 1}))
    return dst


@dataclass(frozen=True)
class Env:
    settings: Settings
    keys: Keys

    @contextlib.contextmanager
    def ota(self) -> Iterator[Ota]:
        with Registry.open(self.settings) as reg:
            yield Ota(reg, self.settings)

    @contextlib.contextmanager
    def server(self) -> Iterator[Running]:
        with running(self.settings) as server:
            yield server


def new_env(home: Path, bundles: list[Path], **settings: Any) -> Env:
    # The rollout tests speak for a thousand device ids with one admin key (an admin key names any device_id),
    # and rate limits are per key.
    settings = test_settings(home, **{"preload": False, "alias_poll_s": 0.05, "ota_report_flush_s": 0.05,
                                      "rate_limit_per_s": 100_000, "rate_limit_burst": 100_000, **settings})
    with Registry.open(settings) as reg:
        for b in bundles:
            reg.push(b)
        keys = {scope: reg.create_key(scope, f"test {scope}")[0] for scope in ("predict", "device", "admin")}
        revoked, info = reg.create_key("device", "revoked")
        reg.revoke_key(info.key_id)
        registered = Devices(reg).register(keys["device"].split("_")[1])[0]
    return Env(settings, Keys(keys["predict"], keys["device"], keys["admin"], revoked, registered))


def synced(server: Running) -> int:
    """Wait until the server answers from the registry's current generation; return it."""
    with Registry.open(server.settings) as reg:
        gen = reg.generation()
    svc = server.app.state.services.ota
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while svc.generation is None or svc.generation < gen:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server still answers from generation {svc.generation}, not {gen}")
        time.sleep(0.02)
    return gen


def _body(device_id: str | None, **fields: Any) -> dict[str, Any]:
    """A request body about model faces; ``device_id`` None: left out (a registered device is itself)."""
    return {"model": "faces", **({} if device_id is None else {"device_id": device_id}), **fields}


class DeviceSide:
    """One HTTP client speaking for any number of device ids (with an admin key), or for the one device
    whose credential it holds."""

    def __init__(self, server: Running, key: str) -> None:
        self.http = server.client(key)
        self.trusted: dict[str, PublicKey] = {}
        self.trust_server_keys()

    def trust_server_keys(self) -> None:
        """Trust the public keys the server lists now (as an app is provisioned with them)."""
        self.trusted = {k["key_id"]: PublicKey.from_b64(k["public_key"])
                        for k in self.http.get("/v1/ota/signing-keys").json()["keys"]}

    def close(self) -> None:
        self.http.close()

    def check_raw(self, device_id: str | None, version: int | None = None, **facts: Any) -> httpx.Response:
        return self.http.post("/v1/ota/check", json=_body(device_id, version=version, **facts))

    def check(self, device_id: str | None, version: int | None = None, **facts: Any) -> dict | None:
        """The verified payload, or None for 204."""
        r = self.check_raw(device_id, version, **facts)
        if r.status_code == 204:
            return None
        assert r.status_code == 200, r.text
        return self.verify(r.json())

    def verify(self, envelope: dict) -> dict:
        payload = base64.b64decode(envelope["payload"])
        verify_envelope(payload, base64.b64decode(envelope["signature"]), envelope["key_id"], self.trusted)
        return json.loads(payload)

    def data_key(self, device_id: str | None, version: int, **facts: Any) -> bytes:
        r = self.http.post("/v1/ota/keys", json=_body(device_id, version=version, **facts))
        assert r.status_code == 200, r.text
        return base64.b64decode(r.json()["key"])

    def report(self, device_id: str | None, version: int, **counts: Any) -> httpx.Response:
        return self.http.post("/v1/ota/report", json=_body(device_id, version=version, **counts))

    def download(self, entry: dict, key: bytes) -> bytes:
        """A file of a payload, decrypted and checked against the payload's sha256 and size."""
        r = self.http.get(entry["url"])
        assert r.status_code == 200, r.text
        if "encrypted" not in entry:
            plain = r.content
        else:
            assert hashlib.sha256(r.content).hexdigest() == entry["encrypted"]["sha256"]
            assert len(r.content) == entry["encrypted"]["size"]
            plain = encryption.decrypt(key, r.content, entry["sha256"].encode())
        assert hashlib.sha256(plain).hexdigest() == entry["sha256"] and len(plain) == entry["size"]
        return plain
