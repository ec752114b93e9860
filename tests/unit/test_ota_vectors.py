"""The OTA test vectors of docs/ota-vectors/, verified with the device's own code, and the browser's.

They are the contract a native client (Kotlin, Swift) implements against: each accepted answer gives
what vectors.json expects, each refused one fails at the check it names, the encrypted blobs decrypt,
the patch rebuilds the new model, and the generator still makes the committed bytes exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tandem import delta
from tandem.bundle.runtime import OnnxModel
from tandem.delta.format import read_header
from tandem.device.payload import MANIFEST, Expected, read_answer
from tandem.device.trust import TrustStore
from tandem.device.vault import aad_for, delta_aad, manifest_of
from tandem.errors import ChecksumError, DecryptionError, PatchError, SignatureError
from tandem.security import encryption
from tandem.security.signing import PublicKey
from tandem.testing import ota_vectors
from tests.conftest import REPO

FOLDER = REPO / "docs" / "ota-vectors"
INDEX: dict[str, Any] = json.loads((FOLDER / "vectors.json").read_text("utf-8"))
KEYS = {k["key_id"]: PublicKey.from_b64(k["public_key"]) for k in INDEX["keys"]["signing"].values()}


def read(name: str) -> bytes:
    return (FOLDER / name).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected(ctx: dict[str, Any]) -> Expected:
    return Expected(ctx["model"], ctx["channel"], ctx["device_id"], ctx["installed_version"], ctx["last_sequence"],
                    datetime.fromisoformat(ctx["now"]), ctx.get("runtime"))


def trusted(ctx: dict[str, Any]) -> dict[str, PublicKey]:
    return {k: KEYS[k] for k in ctx["trusted_keys"]}


def data_key() -> bytes:
    answer = json.loads(read(INDEX["keys"]["data"]["answer"]))
    key = base64.b64decode(answer["key"], validate=True)
    assert answer["alg"] == "AES-256-GCM" and len(key) == 32 and key.hex() == INDEX["keys"]["data"]["key_hex"]
    return key


def test_the_committed_vectors_are_exactly_what_the_generator_makes():
    """The files cannot drift from the code: a change to the wire format, the signing, the encryption or the
    delta format shows here first. (The patch is zstd output: a zstandard upgrade may change its bytes too.)"""
    assert ota_vectors.differences(FOLDER) == [], (
        "docs/ota-vectors/ is not what tandem.testing.ota_vectors makes; after a deliberate protocol change run "
        "`.venv/bin/python -m tandem.testing.ota_vectors`, check the diff, and say so in docs/ota.md")


def test_the_vectors_are_small_and_name_only_documented_checks():
    total = sum(p.stat().st_size for p in FOLDER.iterdir())
    assert total < 64 * 1024, f"the vectors weigh {total} bytes: keep them to kilobytes"
    spec = (REPO / "docs" / "ota.md").read_text("utf-8").split("## Test vectors", 1)
    assert len(spec) == 2, "docs/ota.md has no 'Test vectors' section"
    for code in INDEX["checks"]:
        assert re.search(rf"\*\*{code}\*\*", spec[1]), f"check {code} of vectors.json is not in docs/ota.md"
    named = [c for v in INDEX["answers"].values() for c in v["checks"]] + [v["check"] for v in INDEX["refusals"].values()]
    named += [c for v in [*INDEX["encrypted"].values(), *INDEX["deltas"].values()] for c in v["checks"]]
    named += [v["check"] for v in INDEX["broken"].values()]
    assert set(named) <= set(INDEX["checks"]), set(named) - set(INDEX["checks"])
    for entry in INDEX["files"].values():
        assert sha(read(entry["file"])) == entry["sha256"] and len(read(entry["file"])) == entry["size"]


@pytest.mark.parametrize("name", sorted(INDEX["answers"]))
def test_an_answer_vector_is_accepted_with_what_it_expects(name, tmp_path):
    vector = INDEX["answers"][name]
    ctx, want = vector["context"], vector["expect"]
    got = read_answer(read(vector["answer"]), trusted(ctx), expected(ctx), ctx["retired_keys"])
    p = got.payload
    assert (got.signer, p.action, p.reason, p.version, p.sequence) == (
        want["signer"], want["action"], want["reason"], want["version"], want["sequence"])
    # Learned in the chain's order (A -> B, then B -> C), whatever order the endorsements come in.
    assert [{"key_id": k, "endorsed_by": e.endorsed_by} for k, e in got.learned.items()] == want["learned"]
    assert sorted(got.retired) == want["retired"]
    # T1, with the device's own trust store: what the answer teaches is kept only now.
    store = TrustStore(tmp_path, "the app's device API key", trusted(ctx).values())
    after = store.update(got.learned, got.retired, got.signer)
    assert sorted(after.keys) == want["trusted_after"]


@pytest.mark.parametrize("name", sorted(INDEX["refusals"]))
def test_a_refusal_vector_is_refused_for_its_reason(name):
    vector = INDEX["refusals"][name]
    ctx = vector["context"]
    assert vector["error"] == "SignatureError"
    with pytest.raises(SignatureError, match=re.escape(vector["message"])):
        read_answer(read(vector["answer"]), trusted(ctx), expected(ctx), ctx["retired_keys"])


def test_the_install_vector_goes_through_every_step_in_order():
    """docs/ota.md's steps on answer-install.json: verify → claims → per file, download → sha256 → decrypt →
    (delta → apply) → plaintext sha256 → the manifest agrees → the model opens and runs."""
    ctx = INDEX["context"]
    p = read_answer(read("answer-install.json"), trusted(ctx), expected(ctx)).payload
    manifest_info = p.files[MANIFEST]
    assert p.manifest_sha256 == manifest_info.sha256  # F1
    manifest_bytes = read(INDEX["files"]["manifest"]["file"])  # served in clear
    assert (sha(manifest_bytes), len(manifest_bytes)) == (manifest_info.sha256, manifest_info.size)  # F3, F6
    key = data_key()  # F4
    info = p.files["model.onnx"]
    assert info.encrypted is not None and info.delta is not None

    # The delta path (F2: the device holds v1's file, whose sha256 the delta names).
    held = read(INDEX["files"]["installed"]["file"])
    assert (info.delta.from_version, info.delta.from_sha256) == (ctx["installed_version"], sha(held))
    patch_blob = read(INDEX["files"]["patch_blob"]["file"])
    assert (sha(patch_blob), len(patch_blob)) == (info.delta.sha256, info.delta.size)  # D1
    patch = encryption.decrypt(key, patch_blob, delta_aad(info.delta.from_sha256, info.sha256))
    rebuilt = delta.apply(held, patch, max_size=max(len(held), info.size))  # D2
    # The full path (what a device falls back to when anything about the delta fails).
    blob = read(INDEX["files"]["model_blob"]["file"])
    assert info.url.endswith(sha(blob)) and (sha(blob), len(blob)) == (info.encrypted.sha256, info.encrypted.size)  # F3
    full = encryption.decrypt(key, blob, aad_for(info.sha256))  # F5
    for plain in (rebuilt, full):
        assert (sha(plain), len(plain)) == (info.sha256, info.size)  # F6
    assert rebuilt == full == read(INDEX["files"]["model"]["file"])

    manifest = manifest_of(manifest_bytes)  # F7
    listed = manifest.files["model.onnx"]
    assert (listed.sha256, listed.size) == (info.sha256, info.size) and manifest.models["fp32"] == "model.onnx"
    model = OnnxModel(full, manifest.preprocessing, manifest.labels, threads=1)
    probabilities = model.run(np.zeros((2, 4, 4, 3), np.uint8))["probabilities"]
    assert probabilities.shape == (2, 4) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", sorted(INDEX["encrypted"]))
def test_an_encrypted_vector_decrypts_to_its_plaintext(name):
    vector = INDEX["encrypted"][name]
    blob = read(vector["blob"])
    assert blob[:4] == encryption.MAGIC and blob[4:16].hex() == vector["nonce"]
    plain = encryption.decrypt(data_key(), blob, vector["aad"].encode("ascii"))
    assert plain == read(vector["plaintext"])
    assert (sha(plain), len(plain)) == (vector["plaintext_sha256"], vector["plaintext_size"])


def test_the_delta_vector_rebuilds_the_new_model_byte_for_byte():
    vector = INDEX["deltas"]["v1-to-v2"]
    patch, source = read(vector["patch"]), read(vector["source"])
    header = read_header(patch)
    assert (header.source_size, header.source_sha256.hex()) == (vector["source_size"], vector["source_sha256"])
    assert (header.target_size, header.target_sha256.hex()) == (vector["target_size"], vector["target_sha256"])
    assert delta.patch_kind(patch) == vector["kind"] == "onnx"
    assert delta.apply(source, patch) == read(vector["target"])


def test_the_broken_vectors_fail_where_they_say():
    blob = bytearray(read(INDEX["encrypted"]["model"]["blob"]))
    blob[100] ^= 1
    assert sha(bytes(blob)) != INDEX["files"]["model_blob"]["sha256"]  # F3 refuses it before decrypting
    model_sha = INDEX["encrypted"]["model"]["aad"]
    with pytest.raises(DecryptionError):
        encryption.decrypt(data_key(), bytes(blob), model_sha.encode())
    with pytest.raises(DecryptionError):  # wrong-aad
        encryption.decrypt(data_key(), read(INDEX["encrypted"]["model"]["blob"]), INDEX["files"]["installed"]["sha256"].encode())
    patch = read(INDEX["deltas"]["v1-to-v2"]["patch"])
    with pytest.raises(ChecksumError, match="this patch applies to"):  # wrong-source
        delta.apply(read(INDEX["deltas"]["v1-to-v2"]["target"]), patch)
    with pytest.raises(PatchError, match="truncated"):  # truncated-patch
        delta.apply(read(INDEX["deltas"]["v1-to-v2"]["source"]), patch[:-1])
    assert set(INDEX["broken"]) == {"flipped-blob", "wrong-aad", "wrong-source", "truncated-patch"}


# The browser (web/src/ota.js) trusts the server's key list (docs/browser.md) and reads no endorsements; it
# names no runtime (onnxruntime-web runs the ONNX model a check naming none gets), so P10 is not its check.
BROWSER_OUT_OF_SCOPE = {"rotated"}
BROWSER_NAMES_NO_RUNTIME = {"other-runtime", "onnx-for-litert"}

BROWSER = """
import fs from "node:fs";
import { ModelUpdater } from "%(ota)s";
const index = JSON.parse(fs.readFileSync("%(index)s", "utf8"));
const keys = Object.values(index.keys.signing);
const results = {};
for (const [name, v] of [...Object.entries(index.answers), ...Object.entries(index.refusals)]) {
  const ctx = v.context;
  const updater = new ModelUpdater({ model: ctx.model, channel: ctx.channel });
  const trusted = keys.filter((k) => ctx.trusted_keys.includes(k.key_id) && !ctx.retired_keys.includes(k.key_id));
  updater.trustedKeys = async () => trusted;
  try {
    const envelope = JSON.parse(fs.readFileSync("%(folder)s/" + v.answer, "utf8"));
    const p = await updater._verify(envelope);
    const installed = ctx.installed_version === null ? null : { version: ctx.installed_version };
    updater._checkClaims(p, installed, ctx.device_id, ctx.last_sequence, Date.parse(ctx.now));
    results[name] = { accepted: true, action: p.action, version: p.version };
  } catch (e) {
    results[name] = { accepted: false, error: String(e.message) };
  }
}
console.log(JSON.stringify(results));
"""


def test_the_browser_client_agrees_with_the_vectors():
    """web/src/ota.js, the second client, run in Node on the same files: it accepts and refuses what the
    Python SDK does (signature and claims; key rotation is the browser's own, trust on first use)."""
    node = shutil.which("node")
    assert node, "node (needed by `make install` to build web/) is not on PATH"
    script = BROWSER % {"ota": (REPO / "web" / "src" / "ota.js").as_uri(), "index": FOLDER / "vectors.json",
                        "folder": FOLDER}
    run = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    for name, v in INDEX["answers"].items():
        if name in BROWSER_OUT_OF_SCOPE:
            assert not results[name]["accepted"] and "unknown key" in results[name]["error"]
            continue
        want = v["expect"]
        assert results[name] == {"accepted": True, "action": want["action"], "version": want["version"]}, name
    refused = {name: r for name, r in results.items() if name in INDEX["refusals"] and name not in BROWSER_NAMES_NO_RUNTIME}
    assert refused and all(not r["accepted"] for r in refused.values()), refused
    assert {n for n, v in INDEX["refusals"].items() if v["check"] == "P10"} == BROWSER_NAMES_NO_RUNTIME


def test_the_generator_writes_and_checks_a_folder(tmp_path: Path, capsys):
    assert ota_vectors.main([str(tmp_path)]) == 0
    assert ota_vectors.differences(tmp_path) == []
    (tmp_path / "vectors.json").write_bytes(b"{}")
    (tmp_path / "stale.json").write_bytes(b"{}")
    assert ota_vectors.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "vectors.json: differs" in out and "stale.json: not made by the generator" in out
