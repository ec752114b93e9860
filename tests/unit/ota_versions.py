"""Installable model versions for the device store tests, built from tiny real ONNX bundles.

Each version is what ModelUpdater would hand the store: the bundle manifest in clear, the model
encrypted under a fresh data key, and the record that describes both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tandem.device.model_store import StoredFile, VersionRecord
from tandem.device.vault import aad_for
from tandem.security import encryption
from tandem.testing.bundles import make_bundle

MODEL = "faces"
# The device API key the tests' stores derive their key-wrapping key from.
API_KEY = "tdm_0123456789ab_" + "k" * 43


@dataclass(frozen=True)
class Version:
    record: VersionRecord
    blobs: dict[str, bytes]
    key: bytes
    model: bytes  # the plaintext ONNX file


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_version(tmp: Path, version: int, seed: int) -> Version:
    root = make_bundle(tmp / f"bundle-v{version}-s{seed}", None, name=MODEL, seed=seed)
    manifest, model = (root / "manifest.json").read_bytes(), (root / "model.onnx").read_bytes()
    key = encryption.new_key()
    blob = encryption.encrypt(key, model, aad_for(_sha(model)))
    files = {
        "manifest.json": StoredFile(_sha(manifest), len(manifest), "manifest.json", False, _sha(manifest), len(manifest)),
        "model.onnx": StoredFile(_sha(model), len(model), "model.onnx.tde", True, _sha(blob), len(blob)),
    }
    record = VersionRecord(MODEL, version, version * 10, "production", "fp32", "model.onnx", _sha(manifest), files)
    return Version(record, {"manifest.json": manifest, "model.onnx.tde": blob}, key, model)
