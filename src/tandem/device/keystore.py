"""Data keys of installed model versions, kept on the device wrapped, never in clear.

Why keep them at all: a device must open its model offline (download type ``local``), and the
data key is needed to decrypt it. The trade-off, plainly: each key is wrapped (AES-256-GCM) with a
key derived (HKDF-SHA256) from the device API key and a random salt stored here. Someone who copies
the store off the device (a backup, a stolen SD card, another app reading shared storage) gets
encrypted models and wrapped keys and can read neither. Someone who also holds the device API
key (it ships inside the app, so anyone who unpacks the app has it) can unwrap the keys: at that
point only the server-side revocation of that key protects future versions. Choose
``ModelUpdater(keep_keys=False)`` to keep data keys in memory only: nothing on disk can then
decrypt the model, at the price of asking the server for the key each time the app starts.

File ``keys.json`` at the store root: ``{"schema": 1, "salt": b64, "keys": {"<model>/<version>":
b64 of a TDE1 blob}}``, the blob's associated data binding it to ``<model>/<version>``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tandem import atomic
from tandem.errors import DecryptionError
from tandem.security import encryption

FILE = "keys.json"
_INFO = b"tandem device key store v1"


class KeyStore:
    def __init__(self, root: Path, device_api_key: str) -> None:
        self.path = root / FILE
        self._secret = device_api_key.encode("utf-8")

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if isinstance(data, dict) and data.get("schema") == 1 and isinstance(data.get("keys"), dict):
                base64.b64decode(data["salt"], validate=True)
                return data
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            pass  # unreadable: start afresh; the server hands keys out again to an installed device
        return {"schema": 1, "salt": base64.b64encode(os.urandom(16)).decode(), "keys": {}}

    def _kek(self, data: dict[str, Any]) -> bytes:
        salt = base64.b64decode(data["salt"])
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(self._secret)

    def get(self, model: str, version: int) -> bytes | None:
        """The data key, or None when it is not stored or cannot be unwrapped (e.g. the app got a
        new device API key): the caller then asks the server again."""
        data = self._load()
        blob = data["keys"].get(f"{model}/{version}")
        if not isinstance(blob, str):
            return None
        try:
            return encryption.decrypt(self._kek(data), base64.b64decode(blob), f"{model}/{version}".encode())
        except (DecryptionError, ValueError):
            return None

    def put(self, model: str, version: int, key: bytes) -> None:
        data = self._load()
        wrapped = encryption.encrypt(self._kek(data), key, f"{model}/{version}".encode())
        data["keys"][f"{model}/{version}"] = base64.b64encode(wrapped).decode()
        atomic.write_text(self.path, json.dumps(data, indent=1) + "\n")

    def forget(self, model: str, keep: set[int] | None = None) -> None:
        """Drop the keys of ``model``'s versions, except those in ``keep``."""
        data = self._load()
        prefix = f"{model}/"
        drop = [k for k in data["keys"] if k.startswith(prefix) and (keep is None or k[len(prefix):] not in
                                                                     {str(v) for v in keep})]
        if drop:
            for k in drop:
                del data["keys"][k]
            atomic.write_text(self.path, json.dumps(data, indent=1) + "\n")
