"""The signed answer to an OTA check: verify the envelope, then the claims, then trust the payload.

Order matters: the signature is checked over the exact payload bytes before they are parsed
(docs/ota.md, "Check"), so nothing an attacker wrote reaches the JSON parser's consumers. Then
the claims: schema (2: every answer signed, "stay" too), model, channel, this device's id, a
sequence no lower than the last one accepted, not expired, a "stay" for the version it runs, and
no version lower than the installed one unless the server says ``rollback`` for a reason it
recorded (the release was rolled back, or the device is pinned).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tandem.device.model_store import safe_file_name
from tandem.errors import SignatureError
from tandem.security.signing import PublicKey, verify_envelope

SCHEMA = 2  # the payload schema this SDK asks for (the check's "schema") and reads
MANIFEST = "manifest.json"
CLOCK_SKEW = timedelta(minutes=5)  # a device's clock may be this far behind or ahead of the server's
ROLLBACK_REASONS = ("rolled_back", "pin")  # downgrades the server signs only when it recorded them
_HEX64 = r"^[0-9a-f]{64}$"
MAX_ENVELOPE = 1 << 20  # a payload lists a handful of files; anything larger is not one


def _relative_url(url: str) -> str:
    # The device key travels with every request: never let a payload send it to another host.
    if not url.startswith("/") or url.startswith("//") or "\\" in url:
        raise ValueError(f"a download URL must be a path on the update server, not {url!r}")
    return url


class EncryptedInfo(BaseModel):
    alg: Literal["AES-256-GCM"]
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)


class DeltaInfo(BaseModel):
    from_version: int = Field(ge=0)
    from_sha256: str = Field(pattern=_HEX64)
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)
    url: str

    _url = field_validator("url")(_relative_url)


class FileInfo(BaseModel):
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)
    url: str
    encrypted: EncryptedInfo | None = None
    delta: DeltaInfo | None = None

    _url = field_validator("url")(_relative_url)

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
    files: dict[str, FileInfo] = Field(default_factory=dict)

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


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"the check answer's {what!r} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"the check answer's {what!r} is not valid base64 ({e})") from e


def verify(body: bytes, trusted: dict[str, PublicKey], expected: Expected) -> Payload:
    """The payload of a signed check answer, or SignatureError saying what is wrong with it."""
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
    verify_envelope(payload_bytes, signature, key_id, trusted)

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
    return payload


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
