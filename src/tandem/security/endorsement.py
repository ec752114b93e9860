"""A signing key vouching for another: how a device that trusts only the old key learns the new one
(docs/ota.md, "Signing keys").

An endorsement has the shape of a check answer's envelope, ``{"payload", "signature", "key_id"}``,
where ``key_id`` names the endorsing key, ``signature`` is its Ed25519 signature over the exact
``payload`` bytes, and the payload is the UTF-8 JSON::

    {"purpose": "tandem signing key", "key_id": "<endorsed key id>", "public_key": "<base64>",
     "endorsed_by": "<endorsing key id>", "issued_at": "…Z", "activates": "…Z"}

``purpose`` keeps the two kinds of signed bytes apart: a check payload has a ``schema`` and no
``purpose``, an endorsement the reverse, so neither passes for the other. ``activates`` says when
the server planned the key to start signing; it is information, not a rule (an operator may start it
early), so devices do not enforce it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from tandem.errors import SignatureError
from tandem.security.signing import PublicKey, SigningKey

PURPOSE = "tandem signing key"
MAX_PAYLOAD = 2048  # bytes of an endorsement's payload: a few short fields
MAX_ENDORSEMENTS = 8  # read from one answer at most; the server sends those of its keys not retired
# Retired key ids a check payload names: the server sends its newest this many, and a device refuses an answer
# that names more. One constant for both sides, since a server sending more would have every answer refused.
MAX_RETIRED = 256


@dataclass(frozen=True)
class Endorsement:
    """What a verified endorsement says: ``key`` is vouched for by the key ``endorsed_by``."""

    key: PublicKey
    endorsed_by: str
    activates: str | None = None  # as the server wrote it (ISO 8601); information only


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def endorse(endorser: SigningKey, key: PublicKey, issued_at: datetime, activates: datetime) -> dict[str, str]:
    """``endorser`` vouching for ``key`` (both aware UTC times)."""
    by = endorser.public.key_id
    statement = json.dumps({"purpose": PURPOSE, "key_id": key.key_id, "public_key": key.to_b64(), "endorsed_by": by,
                            "issued_at": _stamp(issued_at), "activates": _stamp(activates)},
                           separators=(",", ":")).encode()
    return {"payload": base64.b64encode(statement).decode(), "signature": base64.b64encode(endorser.sign(statement)).decode(),
            "key_id": by}


def _fields(item: object) -> tuple[str, str, str]:
    if not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in ("payload", "signature", "key_id")):
        raise SignatureError("the answer's 'endorsements' hold an entry that is not {payload, signature, key_id} "
                             "strings; refusing the answer")
    return item["payload"], item["signature"], item["key_id"]


def _b64(text: str, what: str, by: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"an endorsement by key {by[:40]!r} has a {what} that is not valid base64 ({e}); refusing "
                             "the answer") from e


def read(item: object, endorser: PublicKey) -> Endorsement:
    """The endorsement ``item`` signed by ``endorser``, or SignatureError: a bad signature, another purpose,
    ids that do not match, a public key that is not one."""
    payload_text, signature_text, by = _fields(item)
    if by != endorser.key_id:
        raise SignatureError(f"an endorsement names key {by[:40]!r} as its signer, not {endorser.key_id}")
    payload = _b64(payload_text, "payload", by)
    if len(payload) > MAX_PAYLOAD:
        raise SignatureError(f"an endorsement by key {by} is {len(payload)} bytes, more than any endorsement; "
                             "refusing the answer")
    try:
        endorser.verify(payload, _b64(signature_text, "signature", by))
    except SignatureError as e:
        raise SignatureError(f"an endorsement claims to be signed by key {by}, which this device trusts, but its "
                             "signature does not match: it was forged or damaged on the way; refusing the answer") from e
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SignatureError(f"an endorsement signed by key {by} is not JSON ({e})") from e
    if not isinstance(statement, dict) or statement.get("purpose") != PURPOSE:
        raise SignatureError(f"a statement signed by key {by} is not a signing-key endorsement (purpose "
                             f"{statement.get('purpose') if isinstance(statement, dict) else None!r:.60}); refusing it")
    public, key_id, activates = statement.get("public_key"), statement.get("key_id"), statement.get("activates")
    if statement.get("endorsed_by") != by or not isinstance(public, str):
        raise SignatureError(f"an endorsement signed by key {by} names another endorser or no public key; refusing it")
    key = PublicKey.from_b64(public)
    if key_id != key.key_id:
        raise SignatureError(f"an endorsement signed by key {by} gives key id {str(key_id)[:40]!r} for a public key "
                             f"whose id is {key.key_id}; refusing it")
    return Endorsement(key, by, activates if isinstance(activates, str) else None)


def extend(trusted: dict[str, PublicKey], endorsements: object, refused: Collection[str] = ()) -> dict[str, Endorsement]:
    """The keys, beyond ``trusted``, that ``endorsements`` (an answer's field: None or a list) vouch for through a
    chain that starts at a trusted key: A trusted, A endorses B, B endorses C gives B and C. Endorsements by keys
    outside the chain are skipped (they may be for devices that trust other keys); one that a trusted key
    supposedly signed but that does not verify refuses the whole answer. Keys in ``refused`` (retired, as far
    as this device knows) neither endorse nor are learned. Only the first MAX_ENDORSEMENTS entries count."""
    if endorsements is None:
        return {}
    if not isinstance(endorsements, list):
        raise SignatureError("the answer's 'endorsements' is not a list; refusing the answer")
    items = endorsements[:MAX_ENDORSEMENTS]
    for item in items:
        _fields(item)
    known = {k: v for k, v in trusted.items() if k not in refused}
    learned: dict[str, Endorsement] = {}
    pending = list(items)
    while pending:
        left = []
        for item in pending:
            endorser = known.get(item["key_id"])
            if endorser is None:
                left.append(item)
                continue
            e = read(item, endorser)
            if e.key.key_id not in known and e.key.key_id not in refused:
                known[e.key.key_id] = e.key
                learned[e.key.key_id] = e
        if len(left) == len(pending):  # nothing new this round: the rest is endorsed by keys outside the chain
            break
        pending = left
    return learned
