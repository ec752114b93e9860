"""Ed25519 signatures over OTA payloads: the server signs, devices verify before they parse.

A key is identified by ``key_id``: the first 16 hex digits of the sha256 of its raw public key, so
a device can name the key it trusts without holding anything secret.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tandem.errors import SignatureError


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    raw: bytes  # 32 bytes

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError as e:
            raise SignatureError(f"a signing public key is not valid base64 ({e})") from e
        if len(raw) != 32:
            raise SignatureError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
        return cls(key_id_of(raw), raw)

    def to_b64(self) -> str:
        return base64.b64encode(self.raw).decode()

    def verify(self, payload: bytes, signature: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, payload)
        except InvalidSignature as e:
            raise SignatureError(f"the signature does not match the payload for signing key {self.key_id}") from e


@dataclass(frozen=True)
class SigningKey:
    """A private key; its 32-byte seed is what gets stored (wrapped, server side)."""

    seed: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()))

    @property
    def public(self) -> PublicKey:
        raw = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(key_id_of(raw), raw)

    def sign(self, payload: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(payload)


def verify_envelope(payload: bytes, signature: bytes, key_id: str, trusted: dict[str, PublicKey]) -> None:
    """Refuse a payload unless a trusted key signed exactly these bytes."""
    key = trusted.get(key_id)
    if key is None:
        raise SignatureError(
            f"the manifest is signed with key {key_id!r}, which this device does not trust "
            f"(trusted: {', '.join(sorted(trusted)) or 'none'}); add the server's public key"
        )
    key.verify(payload, signature)
