"""The signed answer to an OTA check: verify the envelope, then the claims, then trust the payload.

Order matters: the signature is checked over the exact payload bytes before they are parsed
(docs/ota.md, "Check"), so nothing an attacker wrote reaches the JSON parser's consumers. The key
that signed may be one this device trusts, or one a trusted key endorses in the envelope's
``endorsements`` (tandem.security.endorsement: how a device that trusts only the old key follows a
rotation); keys so learned are handed back for the trust store only once the whole answer passed. Then
the claims: schema (2: every answer signed, "stay" too), model, channel, this device's id, a
sequence no lower than the last one accepted, not expired, a "stay" for the version it runs,
no version lower than the installed one unless the server says ``rollback`` for a reason it
recorded (the release was rolled back, or the device is pinned), and a model of the runtime it asked for.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tandem.device.model_store import safe_file_name
from tandem.errors import SignatureError
from tandem.protocol.origins import is_origin, origin
from tandem.security import endorsement
from tandem.security.endorsement import MAX_RETIRED, Endorsement
from tandem.security.signing import PublicKey, verify_envelope

SCHEMA = 2  # the payload schema this SDK asks for (the check's "schema") and reads
MANIFEST = "manifest.json"
CLOCK_SKEW = timedelta(minutes=5)  # a device's clock may be this far behind or ahead of the server's
ROLLBACK_REASONS = ("rolled_back", "pin")  # downgrades the server signs only when it recorded them
_HEX64 = r"^[0-9a-f]{64}$"
MAX_ENVELOPE = 1 << 20  # a payload lists a handful of files; anything larger is not one
_KEY_ID = r"^[0-9a-f]{16}$"
MAX_MIRRORS = 4  # URLs an object may be offered at besides the update server
MAX_ORIGINS = 8  # origins a payload may allow downloads (and redirects) from
_VARIANT = r"^[a-z][a-z0-9]{0,31}-[a-z0-9]{1,16}$"  # FORMAT-PRECISION
MAX_VARIANTS = 64


def _relative_url(url: str) -> str:
    # The device key travels with every request: never let a payload send it to another host.
    if not url.startswith("/") or url.startswith("//") or "\\" in url:
        raise ValueError(f"a download URL must be a path on the update server, not {url!r}")
    return url


class EncryptedInfo(BaseModel):
    alg: Literal["AES-256-GCM"]
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)


def _absolute_urls(urls: list[str]) -> list[str]:
    for url in urls:
        origin(url)  # ValueError saying what is wrong: not http(s), a user, a fragment, no host
    return urls


class DeltaInfo(BaseModel):
    from_version: int = Field(ge=0)
    from_sha256: str = Field(pattern=_HEX64)
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)
    url: str
    # The same bytes elsewhere (a bucket, a CDN), tried before ``url``: docs/ota.md, "Downloads from storage or a CDN".
    mirrors: list[str] = Field(default_factory=list, max_length=MAX_MIRRORS)

    _url = field_validator("url")(_relative_url)
    _mirrors = field_validator("mirrors")(_absolute_urls)


class FileInfo(BaseModel):
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)
    url: str
    mirrors: list[str] = Field(default_factory=list, max_length=MAX_MIRRORS)
    encrypted: EncryptedInfo | None = None
    delta: DeltaInfo | None = None

    _url = field_validator("url")(_relative_url)
    _mirrors = field_validator("mirrors")(_absolute_urls)

    @property
    def download_sha256(self) -> str:
        return self.encrypted.sha256 if self.encrypted else self.sha256

    @property
    def download_size(self) -> int:
        return self.encrypted.size if self.encrypted else self.size


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: int = Field(alias="schema")
    model: str
    version: int | None = Field(default=None, ge=1)  # stay: the installed version (None: nothing installed)
    action: Literal["install", "rollback", "stay"]
    reason: str
    channel: str
    device_id: str
    issued_at: datetime
    expires_at: datetime
    sequence: int = Field(ge=0)
    manifest_sha256: str | None = Field(default=None, pattern=_HEX64)
    # The model's variant (onnx-fp32, litert-int8, …): in the answers to a check that named its runtime.
    variant: str | None = Field(default=None, pattern=_VARIANT)
    # A stay for "no_variant": the variants the version the device would get offers (it may ask for one of them).
    variants: list[str] = Field(default_factory=list, max_length=MAX_VARIANTS)
    files: dict[str, FileInfo] = Field(default_factory=dict)
    # Signing keys the server retired: this device stops trusting them (never the key that signed this answer).
    retired_keys: list[str] = Field(default_factory=list, max_length=MAX_RETIRED)
    # Where mirrors may be, and where a mirror may redirect to: nothing else is ever fetched.
    download_origins: list[str] = Field(default_factory=list, max_length=MAX_ORIGINS)

    @field_validator("download_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        bad = [o for o in origins if not is_origin(o)]
        if bad:
            raise ValueError(f"download_origins holds {[b[:80] for b in bad[:3]]}, not origins written as "
                             "scheme://host[:port] (lowercase, no default port, no path)")
        return origins

    @field_validator("variants")
    @classmethod
    def _variant_keys(cls, keys: list[str]) -> list[str]:
        bad = [k for k in keys if not re.fullmatch(_VARIANT, k)]
        if bad:
            raise ValueError(f"variants holds {[b[:40] for b in bad[:3]]}, not variant keys (FORMAT-PRECISION)")
        return keys

    @field_validator("retired_keys")
    @classmethod
    def _key_ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not re.fullmatch(_KEY_ID, i)]
        if bad:
            raise ValueError(f"retired_keys holds {bad[:3]}, not signing key ids (16 hex digits)")
        return ids

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileInfo]) -> dict[str, FileInfo]:
        bad = [n for n in files if not safe_file_name(n)]
        if bad:
            raise ValueError(f"file names must be plain relative names, not {bad[:3]}")
        return files

    @field_validator("issued_at", "expires_at")
    @classmethod
    def _aware(cls, t: datetime) -> datetime:
        if t.tzinfo is None:
            raise ValueError("times must name their zone (e.g. 2026-11-27T06:00:00Z)")
        return t

    @model_validator(mode="after")
    def _mirrors_allowed(self) -> Payload:
        allowed = set(self.download_origins)
        for name, f in self.files.items():
            for url in [*f.mirrors, *(f.delta.mirrors if f.delta else [])]:
                if origin(url) not in allowed:
                    raise ValueError(f"{name} may be downloaded from {url[:120]!r}, whose origin {origin(url)!r} is "
                                     f"not among the payload's download_origins {sorted(allowed)}: this device "
                                     "downloads only from the update server and the origins the signed answer names")
        return self

    @model_validator(mode="after")
    def _complete(self) -> Payload:
        if self.action == "stay":
            if self.files:
                raise ValueError("a 'stay' answer lists no files")
            return self
        if self.version is None or self.manifest_sha256 is None:
            raise ValueError(f"an {self.action!r} answer needs version and manifest_sha256")
        if MANIFEST not in self.files:
            raise ValueError("files must include manifest.json")
        return self


@dataclass(frozen=True)
class Expected:
    """What this device will accept."""

    model: str
    channel: str
    device_id: str
    installed_version: int | None
    last_sequence: int
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # this device's clock
    runtime: str | None = None  # the runtime the check named (None: it named none, and any model will do)


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"the check answer's {what!r} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"the check answer's {what!r} is not valid base64 ({e})") from e


@dataclass(frozen=True)
class Answer:
    """A verified check answer: its payload, the key that signed it, and what it changes in the device's trust:
    keys endorsed through a chain from a trusted key (``learned``), keys the server says are retired (``retired``,
    never the signer)."""

    payload: Payload
    signer: str
    learned: dict[str, Endorsement]
    retired: frozenset[str]


def verify(body: bytes, trusted: dict[str, PublicKey], expected: Expected) -> Payload:
    """The payload of a signed check answer, or SignatureError saying what is wrong with it."""
    return read_answer(body, trusted, expected).payload


def read_answer(body: bytes, trusted: dict[str, PublicKey], expected: Expected,
                refused: Collection[str] = ()) -> Answer:
    """The verified answer, or SignatureError saying what is wrong with it. ``trusted``: the keys this device
    trusts now; ``refused``: keys it knows are retired (they neither sign nor endorse, and are never learned)."""
    if len(body) > MAX_ENVELOPE:
        raise SignatureError(f"the check answer is {len(body)} bytes, more than any manifest; refusing it")
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SignatureError(f"the check answer is not JSON ({e}); is the server URL right?") from e
    if not isinstance(envelope, dict):
        raise SignatureError("the check answer is not a JSON object with payload, signature and key_id")
    payload_bytes = _b64(envelope.get("payload"), "payload")
    signature = _b64(envelope.get("signature"), "signature")
    key_id = envelope.get("key_id")
    if not isinstance(key_id, str):
        raise SignatureError("the check answer names no signing key (key_id)")
    known = {k: v for k, v in trusted.items() if k not in refused}
    learned = endorsement.extend(known, envelope.get("endorsements"), refused)
    if key_id not in known and key_id not in learned:
        raise SignatureError(
            f"the answer is signed with key {key_id[:40]!r}, which this device does not trust (trusted: "
            f"{', '.join(sorted(known)) or 'none'}) and which no key it trusts endorses in the answer: the server "
            "rotated its signing key and retired the old one before this device learned the new one, or the answer "
            "is forged; ship the server's current public key (`tandem keys signing list`) in the app")
    verify_envelope(payload_bytes, signature, key_id, {**known, **{k: e.key for k, e in learned.items()}})

    try:
        raw = json.loads(payload_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SignatureError(f"the signed payload is not JSON ({e})") from e
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        found = raw.get("schema") if isinstance(raw, dict) else None
        raise SignatureError(f"the manifest has schema {found!r}; this SDK reads schema {SCHEMA}: update the app")
    try:
        payload = Payload.model_validate(raw)
    except ValidationError as e:
        raise SignatureError(f"the signed payload does not follow schema {SCHEMA}:\n{e}") from e
    check_claims(payload, expected)
    return Answer(payload, key_id, learned, frozenset(payload.retired_keys) - {key_id})


def check_claims(p: Payload, e: Expected) -> None:
    if p.model != e.model:
        raise SignatureError(f"the manifest is for model {p.model!r}, this updater installs {e.model!r}: "
                             "a manifest was swapped; refusing it")
    if p.channel != e.channel:
        raise SignatureError(f"the manifest is for channel {p.channel!r}, this device follows {e.channel!r}; refusing it")
    if p.device_id != e.device_id:
        raise SignatureError(f"the manifest was issued to device {p.device_id!r}, not to this device "
                             f"({e.device_id!r}): a manifest was swapped or replayed; refusing it")
    if p.sequence < e.last_sequence:
        raise SignatureError(f"the manifest has sequence {p.sequence}, lower than the {e.last_sequence} this device "
                             "already accepted: an old manifest was replayed; refusing it")
    if p.expires_at + CLOCK_SKEW < e.now:
        raise SignatureError(f"the answer expired at {p.expires_at.isoformat()} (issued {p.issued_at.isoformat()}); "
                             f"this device's clock says {e.now.isoformat(timespec='seconds')}: an old answer was "
                             "replayed (or the device's clock is wrong); refusing it")
    if p.action == "stay":
        if p.version != e.installed_version:
            raise SignatureError(f"the answer says stay on version {p.version}, but this device runs "
                                 f"{e.installed_version}: it was meant for another moment; refusing it")
        return
    assert p.version is not None
    if e.installed_version is not None and p.version < e.installed_version:
        if p.action != "rollback":
            raise SignatureError(f"the manifest offers version {p.version}, older than the installed "
                                 f"{e.installed_version}, without a rollback: refusing the downgrade")
        if p.reason not in ROLLBACK_REASONS:
            raise SignatureError(f"the manifest rolls back to version {p.version} for reason {p.reason!r}, not a "
                                 "rollback or pin recorded on the server: refusing the downgrade")
    if e.runtime is not None and (p.variant or "onnx-").partition("-")[0] != e.runtime:
        # A server from before variants answers every check with its ONNX model, and no variant.
        got = p.variant or "no variant (an ONNX model: a server from before variants)"
        raise SignatureError(f"the answer offers {got}, but this device asked for the {e.runtime} variant, the "
                             "runtime it runs models with; refusing it")
