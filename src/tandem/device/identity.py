"""This device's registration with its server (docs/ota.md): the id the server assigned and the
credential it gave this device alone, obtained once with the app's device API key
(``POST /v1/devices``) and kept in ``<store>/device.json``.

The credential is kept as the data keys are (tandem.device.keystore): wrapped with AES-256-GCM under
a key derived (HKDF-SHA256) from the app's device API key and a random salt stored beside it, bound
(associated data) to the server and the device id. A copied store alone does not yield it; whoever
also unpacks the app (which holds the device API key) does — see the keystore's note.

File ``device.json``: ``{"schema": 2, "server": "<base URL>", "device_id": "…", "salt": b64,
"credential": b64 of a TDE1 blob}``. A file of schema 1 (a device id the SDK chose itself, before
registration) or for another server is replaced at the next registration.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tandem import atomic
from tandem.errors import DecryptionError
from tandem.security import encryption
from tandem.security.apikeys import parse_device

FILE = "device.json"
LOCK = ".device.lock"
SCHEMA = 2
_INFO = b"tandem device credential v1"


@dataclass(frozen=True)
class Registration:
    device_id: str
    credential: str

    def __repr__(self) -> str:
        return f"Registration(device_id={self.device_id!r}, credential=<hidden>)"


class Identity:
    def __init__(self, root: Path, server_url: str, device_api_key: str) -> None:
        self.path = root / FILE
        self._lock_path = root / LOCK
        self.server = server_url.rstrip("/")
        self._secret = device_api_key.encode("utf-8")

    def _aad(self, device_id: str) -> bytes:
        return f"{self.server}\n{device_id}".encode()

    def _kek(self, salt: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(self._secret)

    def load(self) -> Registration | None:
        """The stored registration with this server, or None (none yet, another server's, or one that
        cannot be unwrapped: e.g. the app now ships another device API key)."""
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("server") != self.server:
                return None
            device_id = data["device_id"]
            blob = base64.b64decode(data["credential"], validate=True)
            salt = base64.b64decode(data["salt"], validate=True)
            credential = encryption.decrypt(self._kek(salt), blob, self._aad(device_id)).decode("ascii")
        except (FileNotFoundError, ValueError, KeyError, TypeError, UnicodeDecodeError, DecryptionError):
            return None
        parsed = parse_device(credential)
        if parsed is None or parsed.key_id != device_id:
            return None
        return Registration(device_id, credential)

    def save(self, registration: Registration) -> None:
        salt = os.urandom(16)
        blob = encryption.encrypt(self._kek(salt), registration.credential.encode("ascii"),
                                  self._aad(registration.device_id))
        atomic.write_text(self.path, json.dumps({
            "schema": SCHEMA, "server": self.server, "device_id": registration.device_id,
            "salt": base64.b64encode(salt).decode(), "credential": base64.b64encode(blob).decode()}, indent=1) + "\n")

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Held while registering, so two processes sharing the store register once between them."""
        return atomic.locked(self._lock_path)
