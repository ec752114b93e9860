"""The signing keys this device trusts: those the app pins (``trusted_keys``), plus those it learned
from verified answers, minus those the server said are retired (docs/ota.md, "Signing keys").

A key is learned only from an endorsement that a trusted key signed, read from an answer that passed
every check (tandem.device.payload); a key is dropped only when an answer that passed every check
says it is retired, and never the key that signed that answer. Nothing unsigned changes what the
device trusts.

File ``trust.json`` at the store root: ``{"schema": 1, "salt": b64, "learned": {"<key id>":
{"public_key", "endorsed_by", "activates", "learned_at"}}, "retired": ["<key id>", …], "mac": b64}``.
Learning a key is as strong as pinning it, so the file carries an HMAC-SHA256 under a key derived
(HKDF-SHA256) from the app's device API key and the salt: a key written into a copied or shared store
by hand is not trusted. Someone who also has the device API key (it ships in the app) can forge the
MAC, as they can unwrap the data keys (tandem.device.keystore). A file that does not verify is
ignored (logged): the device trusts its pinned keys and learns again from the next answers.
Read, changed and replaced (atomically) under a lock, so updaters of several models sharing a store
lose nothing of each other's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tandem import atomic
from tandem.errors import SignatureError
from tandem.security.endorsement import Endorsement
from tandem.security.signing import PublicKey

log = logging.getLogger(__name__)

FILE = "trust.json"
LOCK = ".trust.lock"
SCHEMA = 1
MAX_RETIRED = 1024  # remembered retirements; the oldest are forgotten first
_INFO = b"tandem device trust store v1"


@dataclass(frozen=True)
class Trust:
    """What the device trusts now: ``keys`` (pinned and learned, less the retired) and ``retired``."""

    keys: dict[str, PublicKey]
    retired: frozenset[str]


def _body(data: dict[str, Any]) -> bytes:
    return json.dumps({k: data[k] for k in ("schema", "salt", "learned", "retired")}, sort_keys=True,
                      separators=(",", ":")).encode()


class TrustStore:
    def __init__(self, root: Path, device_api_key: str, pinned: Iterable[PublicKey]) -> None:
        self.path = root / FILE
        self._lock_path = root / LOCK
        self._secret = device_api_key.encode("utf-8")
        self.pinned = {k.key_id: k for k in pinned}

    def _mac(self, data: dict[str, Any]) -> bytes:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=base64.b64decode(data["salt"]), info=_INFO) \
            .derive(self._secret)
        return hmac.new(key, _body(data), hashlib.sha256).digest()

    def _load(self) -> dict[str, Any]:
        fresh = {"schema": SCHEMA, "salt": base64.b64encode(os.urandom(16)).decode(), "learned": {}, "retired": []}
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if not isinstance(data, dict) or data.get("schema") != SCHEMA:
                raise ValueError(f"schema {data.get('schema') if isinstance(data, dict) else None!r}")
            if not hmac.compare_digest(self._mac(data), base64.b64decode(data["mac"], validate=True)):
                raise ValueError("its MAC does not match (changed by hand, or the app's device API key changed)")
            if not isinstance(data["learned"], dict) or not isinstance(data["retired"], list):
                raise ValueError("learned or retired has the wrong type")
            return data
        except FileNotFoundError:
            return fresh
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            log.warning("ignoring %s (%s): trusting the app's pinned signing keys only until answers teach more",
                        self.path, e)
            return fresh

    def _learned(self, data: dict[str, Any]) -> dict[str, PublicKey]:
        out = {}
        for key_id, entry in data["learned"].items():
            try:
                key = PublicKey.from_b64(entry["public_key"])
            except (SignatureError, KeyError, TypeError):
                continue
            if key.key_id == key_id:
                out[key_id] = key
        return out

    def _trust(self, data: dict[str, Any]) -> Trust:
        retired = frozenset(str(k) for k in data["retired"])
        keys = {**self._learned(data), **self.pinned}  # a pinned key wins over a learned one with its id
        return Trust({k: v for k, v in keys.items() if k not in retired}, retired)

    def current(self) -> Trust:
        return self._trust(self._load())

    def learned(self) -> dict[str, dict[str, Any]]:
        """The keys learned from answers: id -> {public_key, endorsed_by, activates, learned_at}."""
        return dict(self._load()["learned"])

    def update(self, learned: dict[str, Endorsement], retired: Iterable[str], signer: str) -> Trust:
        """Keep what a verified answer taught: keys endorsed through a chain from a trusted key, and
        retirements (never of ``signer``, the key that signed that answer). Returns the trust after."""
        retired = {k for k in retired if k != signer}
        with atomic.locked(self._lock_path):
            data = self._load()
            changed = False
            known = set(data["retired"])
            for key_id in sorted(retired - known):
                data["retired"].append(key_id)
                data["learned"].pop(key_id, None)
                changed = True
            del data["retired"][:-MAX_RETIRED]
            known = set(data["retired"])
            now = datetime.now(UTC).isoformat(timespec="seconds")
            for key_id, e in learned.items():
                if key_id in known or key_id in data["learned"] or key_id in self.pinned:
                    continue
                data["learned"][key_id] = {"public_key": e.key.to_b64(), "endorsed_by": e.endorsed_by,
                                           "activates": e.activates, "learned_at": now}
                log.info("learned signing key %s (endorsed by %s)", key_id, e.endorsed_by)
                changed = True
            if changed:
                data["mac"] = base64.b64encode(self._mac(data)).decode()
                atomic.write_text(self.path, json.dumps(data, indent=1) + "\n")
            return self._trust(data)
