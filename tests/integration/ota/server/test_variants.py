"""Variant delivery on a real server (docs/ota.md, "Variants"): the check answers with the model of the
runtime a device names, signed and encrypted, with deltas between versions of that variant; a check that
names no runtime gets the ONNX answer it always got; unknown runtimes and platforms are refused with the
accepted values; a release may hold variants back; a runtime the version lacks is a signed stay.

The bundles are the tiny ONNX ones with made-up LiteRT and Core ML files (the server only hashes, encrypts
and patches them); tests/integration/ota/test_litert_updates.py installs and runs a real LiteRT variant."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tandem import delta
from tandem.bundle import Bundle, write_manifest
from tandem.bundle.manifest import Parity, Software, Variant
from tandem.errors import InvalidRequest
from tandem.security import encryption
from tandem.testing.bundles import make_bundle
from tests.integration.cli import tandem, tandem_json
from tests.integration.ota.server.helpers import DeviceSide, head_update, new_env, synced
from tests.integration.registry_backends import Backend

pytestmark = pytest.mark.integration

ANDROID = {"platform": "android", "os_version": "14", "app_version": "2.4.0", "ram_mb": 4096, "schema": 2}
IOS = {**ANDROID, "platform": "ios"}
FILES = {"litert-fp32": "model.tflite", "litert-int8": "model.int8.tflite", "coreml-fp16": "model.mlpackage.zip"}


def made_up(key: str, seed: int) -> bytes:
    """A stand-in model file of 64 KiB; ``seed`` 2 changes 1 KiB of seed 1's (a small delta)."""
    data = bytearray(np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4])).bytes(64 * 1024))
    if seed == 2:
        data[4096:5120] = np.random.default_rng(7).bytes(1024)
    return bytes(data)


def with_variants(src: Path, dst: Path, keys: list[str], seed: int) -> Path:
    """A copy of bundle ``src`` (schema 3) listing its ONNX model and made-up files of ``keys`` as variants."""
    shutil.copytree(src, dst)
    m = Bundle.load(dst).manifest
    one = [m.inputs[0].model_copy(update={"shape": [1, *m.inputs[0].shape[1:]]})]

    def entry(key: str, file: str) -> Variant:
        fmt, precision = key.split("-")
        return Variant(format=fmt, precision=precision, file=file, inputs=one if fmt != "onnx" else m.inputs,
                       outputs=m.outputs, runtime=Software(name=f"{fmt} runtime", version="1.0"),
                       parity=Parity(images=4, on="test", max_abs=0.0))

    for key in keys:
        (dst / FILES[key]).write_bytes(made_up(key, seed))
    variants = {"onnx-fp32": entry("onnx-fp32", "model.onnx"), **{k: entry(k, FILES[k]) for k in keys}}
    write_manifest(dst, m.model_copy(update={"variants": variants, "schema_version": 3}))
    return dst


@pytest.fixture(scope="module")
def variant_bundles(tmp_path_factory) -> list[Path]:
    """faces v1: ONNX, LiteRT fp32 and int8, Core ML; v2: a fine-tuned head, its LiteRT files changed a little,
    no Core ML; v3: ONNX only (schema 2)."""
    root = tmp_path_factory.mktemp("variant-bundles")
    plain = make_bundle(root / "plain1", None, seed=1)
    return [with_variants(plain, root / "v1", ["litert-fp32", "litert-int8", "coreml-fp16"], 1),
            with_variants(head_update(plain, root / "plain2", seed=2), root / "v2", ["litert-fp32", "litert-int8"], 2),
            make_bundle(root / "v3", None, seed=3)]


@pytest.fixture()
def served(tmp_path, variant_bundles):
    env = new_env(tmp_path / "home", variant_bundles)
    with env.server() as server:
        device = DeviceSide(server, env.keys.admin)
        try:
            yield env, server, device
        finally:
            device.close()


def test_each_runtime_gets_its_variant_and_no_runtime_the_onnx_answer_as_before(served, variant_bundles):
    env, server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    synced(server)
    device.trust_server_keys()
    v1 = variant_bundles[0]

    old = device.check("old-app", None, **{**ANDROID, "schema": 1})  # an app from before variants
    assert set(old["files"]) == {"manifest.json", "model.onnx"} and "variant" not in old and old["precision"] == "fp32"
    assert "variant" not in device.check("old-app", None, **ANDROID)

    onnx = device.check("phone", None, **ANDROID, runtime="onnx")
    assert (onnx["variant"], onnx["precision"], set(onnx["files"])) == ("onnx-fp32", "fp32", {"manifest.json", "model.onnx"})
    litert = device.check("phone", None, **ANDROID, runtime="litert")
    assert (litert["variant"], set(litert["files"])) == ("litert-fp32", {"manifest.json", "model.tflite"})
    tflite = litert["files"]["model.tflite"]
    assert tflite["encrypted"]["alg"] == "AES-256-GCM"
    assert device.download(tflite, device.data_key("phone", 1, **ANDROID, runtime="litert")) == \
        (v1 / "model.tflite").read_bytes()
    int8 = device.check("phone", None, **ANDROID, runtime="litert", precision="int8")
    assert (int8["variant"], int8["precision"], set(int8["files"])) == (
        "litert-int8", "int8", {"manifest.json", "model.int8.tflite"})
    coreml = device.check("iphone", None, **IOS, runtime="coreml")  # fp32 preferred; fp16 is what Core ML has
    assert (coreml["variant"], coreml["precision"]) == ("coreml-fp16", "fp16")

    # A runtime the version has no model for: a signed stay, naming what the device could ask for instead.
    none = device.check("phone", None, **ANDROID, runtime="executorch")
    assert (none["action"], none["reason"], none["version"]) == ("stay", "no_variant", None)
    assert none["variants"] == ["coreml-fp16", "litert-fp32", "litert-int8", "onnx-fp32"] and "files" not in none

    for body, message in (
        ({**ANDROID, "runtime": "tflite"}, "'runtime' must be one of onnx, litert, executorch, coreml, not 'tflite'"),
        ({**ANDROID, "runtime": "litert", "schema": 1}, "'runtime' needs payload schema 2"),
        ({**ANDROID, "runtime": "coreml"}, "coreml does not run on android (it runs on ios, macos)"),
        ({**ANDROID, "runtime": "litert", "platform": "toaster"},
         "send a platform of android, ios, linux, macos, web, windows"),
        ({**ANDROID, "runtime": "onnx", "precision": "bf16"}, "'precision' must be one of fp32, fp16, int8"),
    ):
        r = device.check_raw("phone", None, **body)
        assert r.status_code == 400 and message in r.json()["error"], (body, r.text)
    r = device.http.post("/v1/ota/keys", json={"model": "faces", "device_id": "phone", "version": 1, "runtime": "tfl"})
    assert r.status_code == 400 and "'runtime' must be one of" in r.json()["error"]


def test_a_release_holds_variants_back_and_deltas_join_versions_of_one_variant(served, variant_bundles):
    env, server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2)
    synced(server)
    device.trust_server_keys()
    v1, v2 = variant_bundles[:2]

    # A device on v1's LiteRT int8 model gets v2's as a patch against the file it holds.
    offered = device.check("phone", 1, **ANDROID, runtime="litert", precision="int8")
    entry = offered["files"]["model.int8.tflite"]
    held = (v1 / "model.int8.tflite").read_bytes()
    assert (offered["variant"], entry["delta"]["from_version"]) == ("litert-int8", 1)
    assert entry["delta"]["from_sha256"] == hashlib.sha256(held).hexdigest()
    assert entry["delta"]["size"] < entry["encrypted"]["size"] // 4
    key = device.data_key("phone", 2, **ANDROID, runtime="litert")
    patch = device.http.get(entry["delta"]["url"])
    assert patch.status_code == 200
    plain = encryption.decrypt(key, patch.content, f"{entry['delta']['from_sha256']}:{entry['sha256']}".encode())
    assert delta.apply(held, plain) == (v2 / "model.int8.tflite").read_bytes()
    held_back_url = entry["url"]

    # v2's LiteRT int8 model turns out bad: hold it back; LiteRT int8 devices get the fp32 one, others go on.
    with env.ota() as ota:
        changed = ota.releases.release("faces", 2, variants=["onnx", "litert-fp32"])
        assert changed.variants == ("litert-fp32", "onnx")
        with pytest.raises(InvalidRequest, match="faces v2 has no variant coreml"):
            ota.releases.release("faces", 2, variants=["coreml"])
    synced(server)
    fallback = device.check("phone", 1, **ANDROID, runtime="litert", precision="int8")
    assert (fallback["version"], fallback["variant"], set(fallback["files"])) == (
        2, "litert-fp32", {"manifest.json", "model.tflite"})
    assert device.http.get(held_back_url).status_code == 404  # its encrypted file is no longer served
    assert device.check("phone", 1, **ANDROID, runtime="onnx")["files"]["model.onnx"]["delta"]["from_version"] == 1

    # No LiteRT at all in v2's release: LiteRT devices stay on (or get) v1, whose release offers it.
    with env.ota() as ota:
        ota.releases.release("faces", 2, variants=["onnx"])
    synced(server)
    kept = device.check("phone", 1, **ANDROID, runtime="litert")
    assert (kept["action"], kept["reason"], kept["version"]) == ("stay", "current", 1)
    fresh = device.check("new-phone", None, **ANDROID, runtime="litert")
    assert (fresh["version"], fresh["variant"]) == (1, "litert-fp32")
    assert (device.check("iphone", None, **IOS, runtime="coreml")["version"]) == 1  # v2 has no Core ML model
    assert device.check("phone", 1, **ANDROID)["version"] == 2  # an app from before variants: ONNX, as always
    r = device.http.post("/v1/ota/keys", json={"model": "faces", "device_id": "phone", "version": 2, **ANDROID,
                                               "runtime": "litert"})
    assert r.status_code == 403  # v2 is not offered to a LiteRT device, nor its data key


def test_a_pin_to_a_version_without_the_runtime_is_a_signed_stay(served):
    env, server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.pin("faces", "tester", 3)  # v3: ONNX only
    synced(server)
    device.trust_server_keys()
    stay = device.check("tester", 1, **ANDROID, runtime="litert")
    assert (stay["action"], stay["reason"], stay["version"], stay["variants"]) == ("stay", "no_variant", 1, ["onnx-fp32"])
    pinned = device.check("tester", 1, **ANDROID, runtime="onnx")
    assert (pinned["version"], pinned["action"], pinned["variant"]) == (3, "install", "onnx-fp32")


def test_the_release_command_restricts_and_clears_variants(tmp_path, variant_bundles):
    db = Backend("sqlite", tmp_path / "home", None)
    env = db.env()
    tandem("push", variant_bundles[0], env=env)
    made = tandem_json("release", "faces", 1, "--variants", "onnx,litert-int8", env=env)
    assert made["variants"] == ["litert-int8", "onnx"]
    assert "variants litert-int8/onnx" in tandem("releases", "faces", env=env).stdout
    assert tandem_json("release", "faces", 1, "--variants", "all", env=env)["variants"] == []
    refused = tandem("release", "faces", 1, "--variants", "litert-fp16", env=env, ok=False)
    assert refused.returncode == 7 and "faces v1 has no variant litert-fp16" in refused.stderr
