"""Signing-key rotation on the device: a key is learned only from an endorsement a trusted key signed, in an
answer that passed every check; forged endorsements are refused; a retirement comes only from a verified
answer and never drops the key that signed it; the trust store cannot be edited into trusting a key."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from tandem.cli.ota import parse_overlap
from tandem.device.payload import read_answer
from tandem.device.trust import TrustStore
from tandem.errors import InvalidRequest, SignatureError
from tandem.security import endorsement
from tandem.security.signing import SigningKey
from tests.unit.test_ota_payload import NOW, expected, payload

OLD, NEW, NEWER, ATTACKER = (SigningKey.generate() for _ in range(4))
PINNED = {OLD.public.key_id: OLD.public}


def vouch(endorser: SigningKey, key: SigningKey) -> dict[str, str]:
    return endorsement.endorse(endorser, key.public, NOW, NOW + timedelta(days=7))


def answer(signer: SigningKey, *endorsements: dict, **changes) -> bytes:
    raw = json.dumps(payload(**changes)).encode()
    env = {"payload": base64.b64encode(raw).decode(), "signature": base64.b64encode(signer.sign(raw)).decode(),
           "key_id": signer.public.key_id}
    if endorsements:
        env["endorsements"] = list(endorsements)
    return json.dumps(env).encode()


def test_during_the_overlap_the_current_key_teaches_the_next_one():
    got = read_answer(answer(OLD, vouch(OLD, NEW)), PINNED, expected())
    assert got.signer == OLD.public.key_id and got.payload.version == 4
    assert list(got.learned) == [NEW.public.key_id] and got.learned[NEW.public.key_id].endorsed_by == OLD.public.key_id
    assert got.learned[NEW.public.key_id].activates == "2026-12-04T06:30:00Z"  # information, not a rule


def test_after_the_switch_a_device_that_trusts_only_the_old_key_follows_the_chain():
    got = read_answer(answer(NEW, vouch(OLD, NEW)), PINNED, expected())
    assert got.signer == NEW.public.key_id and set(got.learned) == {NEW.public.key_id}
    # Two rotations behind, the endorsements in any order: OLD -> NEW -> NEWER.
    got = read_answer(answer(NEWER, vouch(NEW, NEWER), vouch(OLD, NEW)), PINNED, expected())
    assert set(got.learned) == {NEW.public.key_id, NEWER.public.key_id}
    # Without the endorsement, the clear error.
    with pytest.raises(SignatureError, match=r"which this device does not trust .* no key it trusts endorses"):
        read_answer(answer(NEW), PINNED, expected())


def test_a_key_is_learned_only_from_an_answer_that_passes_every_check():
    # A genuine endorsement in an answer that fails its claims (another device's, or replayed late) teaches nothing:
    # read_answer refuses the whole answer, so there is nothing to keep.
    for changes, why in (({"device_id": "e" * 32}, "issued to device"), ({"sequence": 3}, "replayed")):
        with pytest.raises(SignatureError, match=why):
            read_answer(answer(OLD, vouch(OLD, NEW), **changes), PINNED, expected())
    # A key this device knows is retired is neither learned nor an endorser.
    got = read_answer(answer(OLD, vouch(OLD, NEW)), PINNED, expected(), refused={NEW.public.key_id})
    assert got.learned == {}
    with pytest.raises(SignatureError, match="does not trust"):
        read_answer(answer(NEW, vouch(OLD, NEW)), PINNED, expected(), refused={OLD.public.key_id})


def _forged_signature() -> dict[str, str]:
    forged = vouch(ATTACKER, ATTACKER)  # the attacker's key, vouched for by itself...
    return {**forged, "key_id": OLD.public.key_id}  # ...but claiming the trusted key signed it


def _swapped_key() -> dict[str, str]:
    genuine = vouch(OLD, NEW)
    statement = json.loads(base64.b64decode(genuine["payload"]))
    statement.update(public_key=ATTACKER.public.to_b64(), key_id=ATTACKER.public.key_id)
    return {**genuine, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}


def _check_payload_as_endorsement() -> dict[str, str]:
    # Bytes the trusted key really signed, but a check payload, not an endorsement: purposes do not mix.
    raw = json.dumps(payload()).encode()
    return {"payload": base64.b64encode(raw).decode(), "signature": base64.b64encode(OLD.sign(raw)).decode(),
            "key_id": OLD.public.key_id}


@pytest.mark.parametrize(("forged", "reason"), [
    (_forged_signature, r"claims to be signed by key .* which this device trusts, but its signature does not match"),
    (_swapped_key, "signature does not match"),
    (_check_payload_as_endorsement, "is not a signing-key endorsement"),
    (lambda: {"payload": 1, "signature": "", "key_id": OLD.public.key_id}, "not {payload, signature, key_id}"),
])
def test_a_forged_endorsement_is_refused(forged, reason):
    for signer in (ATTACKER, OLD):  # whether or not the answer itself is signed by a trusted key
        with pytest.raises(SignatureError, match=reason):
            read_answer(answer(signer, forged()), PINNED, expected())


def test_endorsements_by_keys_outside_the_chain_teach_nothing():
    # The attacker vouches for itself under its own id: skipped (no trusted key signed it), so its answer is refused.
    with pytest.raises(SignatureError, match="does not trust"):
        read_answer(answer(ATTACKER, vouch(ATTACKER, ATTACKER), vouch(ATTACKER, NEW)), PINNED, expected())
    # And a genuine answer carrying it learns only what the trusted chain vouches for.
    got = read_answer(answer(OLD, vouch(ATTACKER, NEWER), vouch(OLD, NEW)), PINNED, expected())
    assert set(got.learned) == {NEW.public.key_id}
    # An endorsement of a check payload key is no check payload either: its bytes signed by OLD do not verify as one.
    with pytest.raises(SignatureError, match="schema"):
        raw = base64.b64decode(vouch(OLD, NEW)["payload"])
        read_answer(json.dumps({"payload": base64.b64encode(raw).decode(),
                                "signature": base64.b64encode(OLD.sign(raw)).decode(),
                                "key_id": OLD.public.key_id}).encode(), PINNED, expected())


def test_retired_keys_come_signed_and_never_name_the_signer():
    retired = [OLD.public.key_id, NEW.public.key_id]
    got = read_answer(answer(NEW, vouch(OLD, NEW), retired_keys=retired), PINNED, expected())
    assert got.retired == {OLD.public.key_id}  # NEW signed this answer: never dropped by it
    with pytest.raises(SignatureError, match="not signing key ids"):
        read_answer(answer(OLD, retired_keys=["../x"]), PINNED, expected())


def test_the_trust_store_keeps_what_verified_answers_taught(tmp_path):
    store = TrustStore(tmp_path, "tdk_app_key", [OLD.public])
    assert set(store.current().keys) == {OLD.public.key_id}
    overlap = read_answer(answer(OLD, vouch(OLD, NEW)), store.current().keys, expected())
    store.update(overlap.learned, overlap.retired, overlap.signer)
    assert set(store.current().keys) == {OLD.public.key_id, NEW.public.key_id}
    again = TrustStore(tmp_path, "tdk_app_key", [OLD.public])  # another process, or the next start
    assert set(again.current().keys) == {OLD.public.key_id, NEW.public.key_id}
    # The server retires the old key: dropped, even though the app pins it; and not learned back from a replay.
    later = read_answer(answer(NEW, vouch(OLD, NEW), retired_keys=[OLD.public.key_id]), again.current().keys,
                        expected())
    again.update(later.learned, later.retired, later.signer)
    trust = again.current()
    assert set(trust.keys) == {NEW.public.key_id} and trust.retired == {OLD.public.key_id}
    assert store.update({}, [NEW.public.key_id], signer=NEW.public.key_id).keys == trust.keys  # never the signer


def test_a_trust_store_edited_by_hand_trusts_only_the_pinned_keys(tmp_path):
    store = TrustStore(tmp_path, "tdk_app_key", [OLD.public])
    store.update({NEW.public.key_id: endorsement.read(vouch(OLD, NEW), OLD.public)}, [], OLD.public.key_id)
    data = json.loads(store.path.read_text())
    data["learned"][ATTACKER.public.key_id] = {"public_key": ATTACKER.public.to_b64(), "endorsed_by": "x"}
    store.path.write_text(json.dumps(data))
    assert set(store.current().keys) == {OLD.public.key_id}  # the MAC no longer matches: nothing learned counts
    store.update({NEW.public.key_id: endorsement.read(vouch(OLD, NEW), OLD.public)}, [], OLD.public.key_id)
    # Another app key (or a copied store with a forged MAC) reads nothing learned either.
    assert set(TrustStore(tmp_path, "tdk_other", [OLD.public]).current().keys) == {OLD.public.key_id}
    assert set(TrustStore(tmp_path, "tdk_app_key", [OLD.public]).current().keys) == {OLD.public.key_id,
                                                                                       NEW.public.key_id}


def test_overlap_durations():
    assert parse_overlap("7d") == timedelta(days=7)
    assert parse_overlap("1d12h") == timedelta(hours=36)
    assert parse_overlap("0") == timedelta(0)
    for bad in ("soon", "-1d", "400d"):
        with pytest.raises(InvalidRequest, match="--overlap"):
            parse_overlap(bad)
