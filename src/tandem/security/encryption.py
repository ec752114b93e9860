"""AES-256-GCM for model files at rest on devices, and for wrapping data keys on the server.

Blob layout: ``b"TDE1" | 12-byte nonce | ciphertext | 16-byte tag``. The associated data binds a
blob to what it claims to be (e.g. the plaintext's sha256), so a blob cannot be swapped for
another one encrypted under the same key.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tandem.errors import DecryptionError

MAGIC = b"TDE1"
NONCE = 12
TAG = 16
KEY_BYTES = 32
OVERHEAD = len(MAGIC) + NONCE + TAG


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    # Random 96-bit nonces: safe for far more blobs than a key ever sees.
    return encrypt_with_nonce(key, os.urandom(NONCE), plaintext, aad)


def encrypt_with_nonce(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """``encrypt`` with a nonce of the caller's: for reproducible test vectors only (docs/ota-vectors/,
    made by tandem.testing.ota_vectors with a published test key). Never for real data: two blobs under one
    key and one nonce give away the XOR of their plaintexts and let anyone forge tags."""
    _check_key(key)
    if len(nonce) != NONCE:
        raise ValueError(f"an AES-GCM nonce here has {NONCE} bytes, got {len(nonce)}")
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    _check_key(key)
    if len(blob) < OVERHEAD or blob[: len(MAGIC)] != MAGIC:
        raise DecryptionError("not a Tandem encrypted blob (bad header or too short); download it again")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE :], aad)
    except InvalidTag as e:
        raise DecryptionError("decryption failed: wrong key, or the file was altered; download it again") from e


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise DecryptionError(f"an AES-256 key has {KEY_BYTES} bytes, got {len(key) if isinstance(key, bytes | bytearray) else type(key).__name__}")
