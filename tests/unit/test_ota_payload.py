"""The device's checks on a signed OTA payload (schema 2), each attack refused with its reason."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from tandem.device.payload import Expected, verify
from tandem.errors import SignatureError
from tandem.security.signing import SigningKey

SERVER = SigningKey.generate()
TRUSTED = {SERVER.public.key_id: SERVER.public}
DEVICE = "d" * 32
SHA = "a" * 64
NOW = datetime(2026, 11, 27, 6, 30, tzinfo=UTC)  # the device's clock, inside the payloads' hour


def payload(**changes) -> dict:
    p = {"schema": 2, "model": "faces", "version": 4, "action": "install", "reason": "release",
         "channel": "production", "device_id": DEVICE, "issued_at": "2026-11-27T06:00:00Z",
         "expires_at": "2026-11-27T07:00:00Z", "sequence": 17, "manifest_sha256": SHA,
         "files": {"manifest.json": {"sha256": SHA, "size": 10, "url": f"/v1/ota/files/{SHA}"},
                   "model.onnx": {"sha256": "b" * 64, "size": 100, "url": "/v1/ota/files/" + "c" * 64,
                                  "encrypted": {"alg": "AES-256-GCM", "sha256": "c" * 64, "size": 132},
                                  "delta": {"from_version": 3, "from_sha256": "e" * 64, "sha256": "f" * 64,
                                            "size": 20, "url": f"/v1/ota/deltas/{'e' * 64}/{'b' * 64}"}}}}
    p.update(changes)
    return p


def envelope(p: dict | bytes, key: SigningKey = SERVER, **changes) -> bytes:
    raw = p if isinstance(p, bytes) else json.dumps(p).encode()
    env = {"payload": base64.b64encode(raw).decode(), "signature": base64.b64encode(key.sign(raw)).decode(),
           "key_id": key.public.key_id}
    env.update(changes)
    return json.dumps(env).encode()


def expected(installed: int | None = 3, last_sequence: int = 16, now: datetime = NOW) -> Expected:
    return Expected("faces", "production", DEVICE, installed, last_sequence, now)


def test_a_well_signed_payload_is_accepted():
    p = verify(envelope(payload()), TRUSTED, expected())
    assert p.version == 4 and p.files["model.onnx"].delta.from_version == 3
    assert p.files["model.onnx"].download_size == 132 and p.files["manifest.json"].download_size == 10
    # The same manifest again (equal sequence) is fine: e.g. the install was interrupted.
    assert verify(envelope(payload()), TRUSTED, expected(last_sequence=17)).sequence == 17


def test_a_signature_over_other_bytes_is_refused():
    raw = json.dumps(payload()).encode()
    forged = json.dumps(payload(version=9)).encode()
    env = json.loads(envelope(raw))
    env["payload"] = base64.b64encode(forged).decode()
    with pytest.raises(SignatureError, match="does not match the payload"):
        verify(json.dumps(env).encode(), TRUSTED, expected())


def test_a_key_the_device_does_not_trust_is_refused():
    with pytest.raises(SignatureError, match="which this device does not trust"):
        verify(envelope(payload(), SigningKey.generate()), TRUSTED, expected())


@pytest.mark.parametrize(("changes", "reason"), [
    ({"device_id": "e" * 32}, "issued to device"),
    ({"model": "other"}, "is for model 'other'"),
    ({"channel": "beta"}, "is for channel 'beta'"),
    ({"sequence": 15}, "an old manifest was replayed"),
    ({"version": 2}, "refusing the downgrade"),
    ({"schema": 1}, "this SDK reads schema 2"),
    ({"expires_at": "2026-11-27T06:10:00Z"}, "the answer expired at 2026-11-27T06:10:00"),
    ({"expires_at": "2026-11-27T07:00:00"}, "must name their zone"),
    ({"version": 2, "action": "rollback", "reason": "release", "sequence": 18}, "not a rollback or pin recorded"),
    ({"action": "stay", "reason": "current", "files": {}, "version": 2}, "says stay on version 2"),
    ({"action": "stay", "reason": "current", "version": 3}, "a 'stay' answer lists no files"),
    ({"files": {"model.onnx": {"sha256": SHA, "size": 1, "url": "/x"}}}, "must include manifest.json"),
    ({"files": {"manifest.json": {"sha256": SHA, "size": 1, "url": "https://evil.example/x"}}}, "path on the update server"),
    ({"files": {"manifest.json": {"sha256": SHA, "size": 1, "url": "/x"}, "../../etc/x": {"sha256": SHA, "size": 1, "url": "/x"}}},
     "plain relative names"),
    ({"action": "wipe"}, "does not follow schema 2"),
    ({"manifest_sha256": "nothex"}, "does not follow schema 2"),
    ({"manifest_sha256": None}, "needs version and manifest_sha256"),
])
def test_claims_this_device_cannot_accept_are_refused(changes, reason):
    with pytest.raises(SignatureError, match=reason):
        verify(envelope(payload(**changes)), TRUSTED, expected())


def test_a_rollback_may_go_down_but_not_behind_the_sequence():
    for reason in ("rolled_back", "pin"):
        p = verify(envelope(payload(version=2, action="rollback", reason=reason, sequence=18)), TRUSTED, expected())
        assert p.action == "rollback" and p.version == 2
    with pytest.raises(SignatureError, match="replayed"):
        verify(envelope(payload(version=2, action="rollback", reason="pin", sequence=12)), TRUSTED, expected())


def test_a_signed_stay_is_an_answer_and_expires_like_any_other():
    stay = payload(action="stay", reason="current", version=3, files={})
    del stay["manifest_sha256"]
    p = verify(envelope(stay), TRUSTED, expected())
    assert (p.action, p.reason, p.version, p.files) == ("stay", "current", 3, {})
    nothing = {**stay, "version": None, "reason": "no_release"}
    assert verify(envelope(nothing), TRUSTED, expected(installed=None)).reason == "no_release"
    # Replayed a day later (to freeze the device on what it has): refused, whatever it says.
    with pytest.raises(SignatureError, match="expired"):
        verify(envelope(stay), TRUSTED, expected(now=NOW + timedelta(days=1)))
    # A device clock a few minutes off still takes a fresh answer.
    assert verify(envelope(stay), TRUSTED, expected(now=NOW + timedelta(minutes=33))).action == "stay"


def test_a_first_install_takes_any_version():
    assert verify(envelope(payload(version=1)), TRUSTED, expected(installed=None, last_sequence=0)).version == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html>proxy login</html>", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"payload": "!!", "signature": "", "key_id": "x"}).encode(), "not valid base64"),
    (json.dumps({"signature": "", "key_id": "x"}).encode(), "'payload' is missing"),
    (b"x" * (2 << 20), "more than any manifest"),
])
def test_answers_that_are_not_envelopes_are_refused(body, reason):
    with pytest.raises(SignatureError, match=reason):
        verify(body, TRUSTED, expected())


def test_a_signed_payload_that_is_not_json_is_refused():
    with pytest.raises(SignatureError, match="signed payload is not JSON"):
        verify(envelope(b"\xff\xfe"), TRUSTED, expected())
    with pytest.raises(SignatureError, match="names no signing key"):
        verify(envelope(payload(), key_id=None), TRUSTED, expected())
