"""API keys: ``tdm_<key_id>_<secret>``. The key id is public (shown, logged, used to look the key
up); the secret is shown once at creation and only its SHA-256 is stored.

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


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Compare in constant time, so response timing does not reveal how much of a hash matched."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
