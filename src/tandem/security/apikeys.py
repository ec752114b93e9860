"""API keys: ``tdm_<key_id>_<secret>``. The key id is public (shown, logged, used to look the key
up); the secret is shown once at creation and only its SHA-256 is stored.

Device credentials (``POST /v1/devices``, docs/ota.md) have the same shape and the same storage:
``tdd_<device_id>_<secret>``, the device id assigned by the server (20 hex characters), the secret
given to that one device once and kept by it.

A plain SHA-256 is the right hash here, not a slow KDF (bcrypt, scrypt, argon2): those exist to
make guessing low-entropy *passwords* from a stolen hash expensive. The secret is 32 random bytes
from ``secrets``, so guessing it is hopeless at any speed, and a fast hash keeps verification
cheap on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "tdm"
KEY_ID_BYTES = 6  # 12 hex characters: unique enough to look keys up, short enough to read out
SECRET_BYTES = 32
_TOKEN = re.compile(r"^tdm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
DEVICE_PREFIX = "tdd"
DEVICE_ID_BYTES = 10  # 20 hex characters: no two devices of any fleet draw the same one
_DEVICE_TOKEN = re.compile(r"^tdd_([0-9a-f]{20})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str

    def __repr__(self) -> str:
        # Keep the secret out of logs and tracebacks that print this object.
        return f"ParsedKey(key_id={self.key_id!r}, secret=<hidden>)"


def new_token() -> tuple[str, ParsedKey]:
    """A fresh random key: the token to hand to the user once, and its parts."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)  # 43 characters of base64url
    return f"{PREFIX}_{key_id}_{secret}", ParsedKey(key_id, secret)


def parse(token: str) -> ParsedKey | None:
    """The key id and secret of a well-formed token, or None (never an exception that quotes it)."""
    if not isinstance(token, str):
        return None
    m = _TOKEN.fullmatch(token.strip())
    if m is None:
        return None
    return ParsedKey(m.group(1), m.group(2))


def new_device_token() -> tuple[str, ParsedKey]:
    """A fresh device credential: the token to give the device once, and its parts (key_id: the device id)."""
    device_id = secrets.token_hex(DEVICE_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{DEVICE_PREFIX}_{device_id}_{secret}", ParsedKey(device_id, secret)


def parse_device(token: str) -> ParsedKey | None:
    """The device id and secret of a well-formed device credential, or None."""
    if not isinstance(token, str):
        return None
    m = _DEVICE_TOKEN.fullmatch(token.strip())
    return None if m is None else ParsedKey(m.group(1), m.group(2))


def is_device_token(token: str) -> bool:
    return token.startswith(DEVICE_PREFIX + "_")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Compare in constant time, so response timing does not reveal how much of a hash matched."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
