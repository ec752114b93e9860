"""The OTA protocol's test vectors (docs/ota.md, "Test vectors"), made with published TEST-ONLY keys.

A native client (Kotlin, Swift) proves it speaks docs/ota.md by running these files through its own
code: a signed check answer verified with a pinned key (and one that follows a key rotation through
endorsements), answers it must refuse and why, an encrypted model file with its data key, and a
delta patch between two versions of a tiny ONNX model. ``docs/ota-vectors/vectors.json`` indexes
them: inputs, the device's context, expected outputs, and the check of docs/ota.md each exercises.

Every byte is reproducible: the signing seeds, the data key and the AES-GCM nonces are derived from
fixed labels (``test_bytes``), the times are fixed, Ed25519 is deterministic, and the models are
written at the protobuf wire level (tandem.testing.onnx_bytes). tests/unit/test_ota_vectors.py
verifies the committed files with Tandem's device code and checks that ``build()`` gives them again,
byte for byte, so they cannot drift from the code. After a deliberate protocol change, write them
again and commit them::

    .venv/bin/python -m tandem.testing.ota_vectors            # writes docs/ota-vectors/
    .venv/bin/python -m tandem.testing.ota_vectors --check    # exit 1 if the committed files differ

The keys are public: anyone can sign with them. Never trust them outside a test.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tandem import atomic, delta
from tandem.security import encryption, endorsement
from tandem.security.signing import SigningKey
from tandem.testing import onnx_bytes

FOLDER = Path(__file__).resolve().parents[3] / "docs" / "ota-vectors"
HANDWRITTEN = {"README.md", ".gitattributes"}  # in the folder, not made here
LABEL = "tandem OTA test vector, TEST ONLY, NOT A SECRET: "

MODEL, CHANNEL, PRECISION = "tiny", "production", "fp32"
INSTALLED, OFFERED = 1, 2
LAST_SEQUENCE, SEQUENCE = 16, 17
ISSUED = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(hours=1)  # TANDEM_OTA_PAYLOAD_TTL_S's default
NOW = ISSUED + timedelta(minutes=30)  # the device's clock when it reads the answers
CLOCK_SKEW = timedelta(minutes=5)  # tandem.device.payload.CLOCK_SKEW
FILES_URL, DELTAS_URL = "/v1/ota/files/", "/v1/ota/deltas/"
MODEL_FILE = "model.onnx"
V1_FILE, V2_FILE = "model-v1.onnx", "model-v2.onnx"
PATCH_FILE = "model-v1-to-v2.tdp"

# The checks of docs/ota.md ("Test vectors": the client's steps, in order) that the vectors name.
CHECKS = {
    "A1": "the answer is at most 1 MiB and a JSON object",
    "A2": "payload and signature are standard base64 strings, key_id a string",
    "A3": "endorsements: absent, or a list of {payload, signature, key_id} strings (the first 8 count)",
    "A4": "endorsements by trusted or learned keys verify, say purpose 'tandem signing key', and name the key they vouch for",
    "A5": "the envelope's key_id is trusted, or learned in A4",
    "A6": "the Ed25519 signature verifies over the exact payload bytes",
    "P1": "the payload is a JSON object with schema 2",
    "P2": "the payload's fields have their types (install and rollback: version, manifest_sha256, files with manifest.json; stay: no files)",
    "P3": "model is the one the device asked about",
    "P4": "channel is the one the device follows",
    "P5": "device_id is this device's server-assigned id",
    "P6": "sequence is no lower than the last one accepted",
    "P7": "expires_at plus 5 minutes is not before the device's clock",
    "P8": "a stay names the installed version",
    "P9": "a version below the installed one only as action rollback with reason rolled_back or pin",
    "P10": "a device that named its runtime: an install or rollback's variant (none: an ONNX model) is of that runtime",
    "T1": "only after all of that: learned keys are trusted, retired_keys (not the signer) are not",
    "F1": "manifest_sha256 equals files['manifest.json'].sha256",
    "F2": "each file: an installed copy with its sha256, else its delta, else the full file",
    "F3": "a download has the signed size and sha256 (encrypted.* for an encrypted file)",
    "F4": "the data key: POST /v1/ota/keys, 32 bytes of base64",
    "F5": "decrypt: TDE1 | 12-byte nonce | ciphertext | 16-byte tag, AES-256-GCM, aad = the plaintext's sha256 in hex",
    "D1": "a delta: its download's size and sha256, decrypted with the target version's key (aad 'from:to'), applied to the file of from_version",
    "D2": "TDP1: header, source size and sha256, sections, target size and sha256",
    "F6": "the plaintext has the file's size and sha256",
    "F7": "the manifest lists every other file with the same sha256 and size, and names the model file",
}


def test_bytes(label: str, n: int = 32) -> bytes:
    """The TEST-ONLY secret named ``label``: sha256 of a fixed prefix and the label, cut to ``n`` bytes."""
    return hashlib.sha256((LABEL + label).encode()).digest()[:n]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()


SIGNERS = {name: SigningKey(test_bytes(f"signing key {name}")) for name in "ABCD"}
ROLES = {"A": "pinned in the app", "B": "the next key, endorsed by A", "C": "the key after, endorsed by B",
         "D": "an attacker's key: nobody endorses it"}
DATA_KEY = test_bytes(f"data key of {MODEL} v{OFFERED}")
DATA_KEY_ID = test_bytes(f"data key id of {MODEL} v{OFFERED}", 8).hex()
DEVICE_ID = test_bytes("device id", 10).hex()  # as the server assigns them: 20 hex digits
MODEL_NONCE = test_bytes("nonce of model.onnx v2", encryption.NONCE)
PATCH_NONCE = test_bytes("nonce of the v1 to v2 patch", encryption.NONCE)


def _id(name: str) -> str:
    return SIGNERS[name].public.key_id


def models() -> tuple[bytes, bytes]:
    """v1 and v2 of the tiny classifier: a fine-tune of the head (features.weight unchanged)."""
    features = onnx_bytes.weights("features.weight", onnx_bytes.FEATURES, onnx_bytes.HIDDEN)
    head = onnx_bytes.weights("head.weight", onnx_bytes.HIDDEN, onnx_bytes.CLASSES)
    bias = onnx_bytes.weights("head.bias", onnx_bytes.CLASSES)
    nudge = onnx_bytes.weights("head.weight, fine-tuned", onnx_bytes.HIDDEN, onnx_bytes.CLASSES) * 0.02
    return (onnx_bytes.classifier(features, head, bias),
            onnx_bytes.classifier(features, head + nudge, bias + nudge[0]))


def manifest(model: bytes) -> bytes:
    """v2's bundle manifest (schema 2), written out in full so that it does not move with Manifest's defaults."""
    tensor = {"dtype": "float32", "shape": [-1, onnx_bytes.CLASSES]}
    return _json({
        "schema_version": 2, "name": MODEL, "version": OFFERED, "parent_version": INSTALLED,
        "created": "2026-01-10T09:00:00Z", "task": "image-classification",
        "inputs": [{"name": "pixels", "dtype": "uint8", "shape": [-1, onnx_bytes.HEIGHT, onnx_bytes.WIDTH, 3]}],
        "outputs": [{"name": "probabilities", **tensor}],
        "preprocessing": {"color": "RGB", "crop": {"mode": "none"}, "height": onnx_bytes.HEIGHT,
                          "width": onnx_bytes.WIDTH, "interpolation": "bilinear", "layout": "NHWC", "dtype": "uint8",
                          "normalize_in_graph": {"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}},
        "labels": ["ant", "bee", "cat", "dog"], "models": {"fp32": MODEL_FILE},
        "files": {MODEL_FILE: {"sha256": _sha(model), "size": len(model)}}})


def _envelope(payload: bytes, signer: str, endorsements: list[dict[str, str]] | None = None) -> bytes:
    """As the server sends it (tandem.server.ota.state.OtaState.sign)."""
    env: dict[str, Any] = {"payload": _b64(payload), "signature": _b64(SIGNERS[signer].sign(payload)),
                           "key_id": _id(signer)}
    if endorsements:
        env["endorsements"] = endorsements
    return _json(env)


def _payload(fields: dict[str, Any]) -> bytes:
    # Compact, keys in the server's order (its orjson.dumps): a client verifies these bytes, never a re-encoding.
    return json.dumps(fields, separators=(",", ":")).encode()


def _head(sequence: int = SEQUENCE, retired: list[str] | None = None, schema: int = 2) -> dict[str, Any]:
    head: dict[str, Any] = {"schema": schema, "model": MODEL, "channel": CHANNEL, "device_id": DEVICE_ID,
                            "issued_at": _stamp(ISSUED), "sequence": sequence, "expires_at": _stamp(EXPIRES)}
    if retired:
        head["retired_keys"] = retired
    return head


def _context(**changes: Any) -> dict[str, Any]:
    """The device's side: what it asked, what it holds, what it trusts, its clock."""
    ctx = {"model": MODEL, "channel": CHANNEL, "device_id": DEVICE_ID, "installed_version": INSTALLED,
           "last_sequence": LAST_SEQUENCE, "now": _stamp(NOW), "trusted_keys": [_id("A")], "retired_keys": []}
    ctx.update(changes)
    return ctx


class _Made:
    """The files, and the index entries that describe them."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add(self, name: str, data: bytes) -> dict[str, Any]:
        self.files[name] = data
        return {"file": name, "sha256": _sha(data), "size": len(data)}


def build() -> dict[str, bytes]:
    """Every file of docs/ota-vectors/ but the handwritten ones, by name."""
    made = _Made()
    old, new = models()
    manifest_bytes = manifest(new)
    patch = delta.diff(old, new, "onnx")
    model_sha, old_sha = _sha(new), _sha(old)
    blob = encryption.encrypt_with_nonce(DATA_KEY, MODEL_NONCE, new, model_sha.encode("ascii"))
    patch_aad = f"{old_sha}:{model_sha}"
    patch_blob = encryption.encrypt_with_nonce(DATA_KEY, PATCH_NONCE, patch, patch_aad.encode("ascii"))

    files_index = {
        "installed": made.add(V1_FILE, old) | {"role": f"{MODEL_FILE} of v{INSTALLED}, held by the device (the delta's source)"},
        "model": made.add(V2_FILE, new) | {"role": f"{MODEL_FILE} of v{OFFERED} in clear: what decrypting or patching must give"},
        "manifest": made.add("manifest.json", manifest_bytes) | {"role": f"v{OFFERED}'s manifest.json, served unencrypted"},
        "model_blob": made.add(V2_FILE + ".tde", blob) | {"role": f"what {FILES_URL}<sha256> sends for {MODEL_FILE}"},
        "patch": made.add(PATCH_FILE, patch) | {"role": "the TDP1 patch from v1 to v2, in clear"},
        "patch_blob": made.add(PATCH_FILE + ".tde", patch_blob) | {"role": f"what {DELTAS_URL}<from>/<to> sends"},
    }
    key_answer = made.add("data-key.json", _json({"model": MODEL, "version": OFFERED, "key_id": DATA_KEY_ID,
                                                  "alg": "AES-256-GCM", "key": _b64(DATA_KEY)}))

    model_entry = {"sha256": model_sha, "size": len(new), "url": FILES_URL + _sha(blob),
                   "encrypted": {"alg": "AES-256-GCM", "key_id": DATA_KEY_ID, "sha256": _sha(blob), "size": len(blob)},
                   "delta": {"from_version": INSTALLED, "from_sha256": old_sha, "sha256": _sha(patch_blob),
                             "size": len(patch_blob), "url": f"{DELTAS_URL}{old_sha}/{_sha(blob)}"}}
    files = {"manifest.json": {"sha256": _sha(manifest_bytes), "size": len(manifest_bytes),
                               "url": FILES_URL + _sha(manifest_bytes)}, MODEL_FILE: model_entry}

    def install(**head: Any) -> dict[str, Any]:
        return {**_head(**head), "version": OFFERED, "action": "install", "precision": PRECISION,
                "manifest_sha256": _sha(manifest_bytes), "files": files, "reason": "release"}

    good = _payload(install())
    rotated_payload = _payload(install(sequence=SEQUENCE + 1, retired=[_id("A")]))
    stay = _payload({**_head(), "version": INSTALLED, "action": "stay", "reason": "current"})
    # Back from v2 to v1: what the server signs when v2's release was rolled back (the device runs v2 then).
    # Only its claims are vectors: its files are not meant to be downloaded.
    rollback_files = {MODEL_FILE: {"sha256": old_sha, "size": len(old), "url": FILES_URL + old_sha}}
    rollback_fields = {**_head(), "version": INSTALLED, "action": "rollback", "precision": PRECISION,
                       "manifest_sha256": _sha(manifest_bytes), "files": {**files, **rollback_files}}
    rollback = _payload({**rollback_fields, "reason": "rolled_back"})
    unrecorded = _payload({**rollback_fields, "reason": "release"})
    # What a device that asked for "runtime": "litert" and "precision": "int8" gets (docs/ota.md, "Variants"): the
    # LiteRT int8 file and the payload naming its variant. Only its claims are vectors (this manifest lists no
    # LiteRT file); and, for a runtime the version has no model of, the signed stay naming what it does have.
    tflite = {"sha256": _sha(b"litert"), "size": 6, "url": FILES_URL + _sha(b"litert, encrypted"),
              "encrypted": {"alg": "AES-256-GCM", "key_id": DATA_KEY_ID, "sha256": _sha(b"litert, encrypted"),
                            "size": 34}}
    variant = _payload({**_head(), "version": OFFERED, "action": "install", "precision": "int8",
                        "variant": "litert-int8", "manifest_sha256": _sha(manifest_bytes),
                        "files": {"manifest.json": files["manifest.json"], "model.int8.tflite": tflite},
                        "reason": "release"})
    no_variant = _payload({**_head(), "version": INSTALLED, "action": "stay", "reason": "no_variant",
                           "variants": ["onnx-fp32"]})

    a_to_b = endorsement.endorse(SIGNERS["A"], SIGNERS["B"].public, ISSUED - timedelta(days=14),
                                 ISSUED - timedelta(days=7))
    b_to_c = endorsement.endorse(SIGNERS["B"], SIGNERS["C"].public, ISSUED - timedelta(days=7), ISSUED)
    forged = {**a_to_b, "signature": _b64(SIGNERS["D"].sign(base64.b64decode(a_to_b["payload"])))}
    d_to_d = endorsement.endorse(SIGNERS["D"], SIGNERS["D"].public, ISSUED, ISSUED)
    tampered = json.loads(_envelope(good, "A"))
    tampered["payload"] = _b64(good.replace(b'"version":2', b'"version":3', 1))

    def accept(answer: str, context: dict[str, Any], checks: list[str], **expect: Any) -> dict[str, Any]:
        note = expect.pop("note", None)
        entry = {"answer": answer, "context": context, "checks": checks, "expect": expect}
        return entry | {"note": note} if note else entry

    def accepted(version: int, action: str, reason: str, sequence: int = SEQUENCE) -> dict[str, Any]:
        return {"signer": _id("A"), "action": action, "reason": reason, "version": version, "sequence": sequence,
                "learned": [], "retired": [], "trusted_after": [_id("A")]}

    made.add("answer-install.json", _envelope(good, "A"))
    made.add("answer-rotated.json", _envelope(rotated_payload, "C", [b_to_c, a_to_b]))
    made.add("answer-stay.json", _envelope(stay, "A"))
    made.add("answer-rollback.json", _envelope(rollback, "A"))
    made.add("answer-variant.json", _envelope(variant, "A"))
    made.add("answer-no-variant.json", _envelope(no_variant, "A"))
    install_ok = accepted(OFFERED, "install", "release")
    answers = {
        "install": accept("answer-install.json", _context(), ["A1", "A2", "A3", "A5", "A6", "P1", "P2", "P3", "P4",
                                                              "P5", "P6", "P7", "F1"], **install_ok),
        "rotated": accept(
            "answer-rotated.json", _context(), ["A3", "A4", "A5", "A6", "T1"],
            **install_ok | {"signer": _id("C"), "sequence": SEQUENCE + 1, "retired": [_id("A")],
                            "learned": [{"key_id": _id("B"), "endorsed_by": _id("A")},
                                        {"key_id": _id("C"), "endorsed_by": _id("B")}],
                            "trusted_after": sorted([_id("B"), _id("C")])},
            note="signed by C, which the device learns through A -> B -> C; the endorsements come newest first, so a "
                 "client goes over them until a round learns nothing. The answer retires A: once it has verified, "
                 "the device trusts B and C only"),
        "stay": accept("answer-stay.json", _context(), ["P2", "P8"], **accepted(INSTALLED, "stay", "current")),
        "rollback": accept("answer-rollback.json", _context(installed_version=OFFERED), ["P9"],
                           **accepted(INSTALLED, "rollback", "rolled_back"),
                           note="claims only: its files are not vectors to download"),
        "expiry-edge": accept("answer-install.json", _context(now=_stamp(EXPIRES + CLOCK_SKEW)), ["P7"], **install_ok,
                              note="the device's clock at exactly expires_at + 5 minutes: still accepted"),
        "same-sequence": accept("answer-install.json", _context(last_sequence=SEQUENCE), ["P6"], **install_ok,
                                note="the sequence already accepted: accepted again (an interrupted install goes on)"),
        "variant": accept("answer-variant.json", _context(runtime="litert"), ["P2", "P10"], **install_ok,
                          note="asked with runtime litert and precision int8: variant litert-int8, its file alone; "
                               "claims only: its files are not vectors to download"),
        "no-variant": accept("answer-no-variant.json", _context(runtime="litert"), ["P2", "P8"],
                             **accepted(INSTALLED, "stay", "no_variant"),
                             note="no release offers a litert model to this device: a signed stay; `variants` lists "
                                  "what the version it would get has, to ask for instead"),
    }

    def refuse(answer: str, check: str, message: str, note: str | None = None, **context: Any) -> dict[str, Any]:
        entry = {"answer": answer, "context": _context(**context), "check": check, "error": "SignatureError",
                 "message": message}
        return entry | {"note": note} if note else entry

    made.add("refuse-tampered-payload.json", _json(tampered))
    made.add("refuse-untrusted-key.json", _envelope(good, "D"))
    made.add("refuse-forged-endorsement.json", _envelope(good, "B", [forged]))
    made.add("refuse-self-endorsed.json", _envelope(good, "D", [d_to_d]))
    made.add("refuse-schema-1.json", _envelope(_payload(install(schema=1)), "A"))
    made.add("refuse-unrecorded-rollback.json", _envelope(unrecorded, "A"))
    refusals = {
        "tampered-payload": refuse("refuse-tampered-payload.json", "A6", "does not match the payload",
                                   note="answer-install.json with \"version\":2 changed to 3 in the payload bytes"),
        "untrusted-key": refuse("refuse-untrusted-key.json", "A5", "which this device does not trust"),
        "forged-endorsement": refuse("refuse-forged-endorsement.json", "A4", "signature does not match: it was forged",
                                     note="an endorsement of B that claims A as its signer, signed by D: the whole "
                                          "answer is refused"),
        "self-endorsed": refuse("refuse-self-endorsed.json", "A5", "which this device does not trust",
                                note="D vouching for itself teaches nothing"),
        "retired-signer": refuse("answer-rotated.json", "A5", "which this device does not trust",
                                 note="a device that already knows A is retired: A endorses nothing for it",
                                 retired_keys=[_id("A")]),
        "schema-1": refuse("refuse-schema-1.json", "P1", "this SDK reads schema 2"),
        "other-model": refuse("answer-install.json", "P3", "is for model 'tiny'", model="other"),
        "other-channel": refuse("answer-install.json", "P4", "is for channel 'production'", channel="beta"),
        "other-device": refuse("answer-install.json", "P5", "was issued to device", device_id="0" * 20),
        "replayed-sequence": refuse("answer-install.json", "P6", "an old manifest was replayed",
                                    last_sequence=SEQUENCE + 1),
        "expired": refuse("answer-install.json", "P7", "the answer expired at",
                          now=_stamp(EXPIRES + CLOCK_SKEW + timedelta(seconds=1))),
        "stay-elsewhere": refuse("answer-stay.json", "P8", "says stay on version 1", installed_version=OFFERED),
        "downgrade": refuse("answer-install.json", "P9", "refusing the downgrade", installed_version=OFFERED + 1),
        "unrecorded-rollback": refuse("refuse-unrecorded-rollback.json", "P9", "not a rollback or pin recorded",
                                      installed_version=OFFERED),
        "other-runtime": refuse("answer-variant.json", "P10", "but this device asked for the onnx variant",
                                note="the LiteRT answer, for a device that asked for runtime onnx", runtime="onnx"),
        "onnx-for-litert": refuse("answer-install.json", "P10", "offers no variant",
                                  note="an answer naming no variant (an ONNX model, as servers from before variants "
                                       "send) for a device that asked for runtime litert", runtime="litert"),
    }

    blobs = {
        "model": {"blob": files_index["model_blob"]["file"], "key": "data-key.json", "nonce": MODEL_NONCE.hex(),
                  "aad": model_sha, "plaintext": files_index["model"]["file"], "plaintext_sha256": model_sha,
                  "plaintext_size": len(new), "checks": ["F3", "F4", "F5", "F6"]},
        "patch": {"blob": files_index["patch_blob"]["file"], "key": "data-key.json", "nonce": PATCH_NONCE.hex(),
                  "aad": patch_aad, "plaintext": files_index["patch"]["file"], "plaintext_sha256": _sha(patch),
                  "plaintext_size": len(patch), "checks": ["D1", "F5"]},
    }
    deltas = {"v1-to-v2": {
        "patch": PATCH_FILE, "kind": delta.patch_kind(patch), "source": V1_FILE, "source_sha256": old_sha,
        "source_size": len(old), "target": V2_FILE, "target_sha256": model_sha, "target_size": len(new),
        "checks": ["D1", "D2", "F6"]}}
    broken = {
        "flipped-blob": {"operation": "flip bit 0 of byte 100 of " + files_index["model_blob"]["file"], "check": "F3",
                         "expect": "the sha256 is not encrypted.sha256; decrypted anyway, the tag fails (F5)"},
        "wrong-aad": {"operation": f"decrypt {files_index['model_blob']['file']} with aad = v1's sha256", "check": "F5",
                      "expect": "the tag fails"},
        "wrong-source": {"operation": f"apply {PATCH_FILE} to {V2_FILE} instead of {V1_FILE}", "check": "D2",
                         "expect": "the source's size or sha256 is not the header's: refused before anything is built"},
        "truncated-patch": {"operation": f"apply {PATCH_FILE} without its last byte", "check": "D2",
                            "expect": "refused (a section is cut short); the client downloads the full file instead"},
    }
    index = {
        "format": 1,
        "warning": "TEST-ONLY keys, published here: anyone can sign and decrypt with them. Never ship or trust them.",
        "spec": "docs/ota.md, 'Test vectors' (the checks below are its steps)",
        "made_by": "python -m tandem.testing.ota_vectors (tests/unit/test_ota_vectors.py checks it gives these bytes)",
        "checks": CHECKS,
        "keys": {
            "derivation": f"each secret is sha256(UTF-8 of {LABEL!r} + its label), cut to its length",
            "signing": {name: {"role": ROLES[name], "label": f"signing key {name}", "seed_hex": s.seed.hex(),
                               "public_key": s.public.to_b64(), "key_id": s.public.key_id}
                        for name, s in SIGNERS.items()},
            "data": {"model": MODEL, "version": OFFERED, "key_id": DATA_KEY_ID, "key_hex": DATA_KEY.hex(),
                     "key_b64": _b64(DATA_KEY), "answer": key_answer["file"]},
        },
        "context": {"about": "the device's side of every answer vector, unless the vector gives its own context",
                    **_context()},
        "files": files_index,
        "answers": answers,
        "refusals": refusals,
        "encrypted": blobs,
        "deltas": deltas,
        "broken": broken,
    }
    made.add("vectors.json", _json(index))
    return made.files


def differences(folder: Path = FOLDER) -> list[str]:
    """What in ``folder`` is not what ``build()`` makes: missing, different or unexpected files."""
    made = build()
    have = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    out = [f"{n}: missing" for n in sorted(made.keys() - have)]
    out += [f"{n}: differs" for n in sorted(made.keys() & have) if (folder / n).read_bytes() != made[n]]
    out += [f"{n}: not made by the generator (remove it?)" for n in sorted(have - made.keys() - HANDWRITTEN)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.testing.ota_vectors", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=FOLDER)
    parser.add_argument("--check", action="store_true", help="compare with the folder, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences(args.folder)
        print("\n".join(diff) or f"{args.folder}: up to date")
        return 1 if diff else 0
    for name, data in build().items():
        atomic.write_bytes(args.folder / name, data)
    print(f"wrote the OTA test vectors to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
