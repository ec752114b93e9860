"""The data keys in use, and installed files read back in clear, in memory only.

A version's data key comes from memory, else the key store (tandem.device.keystore), else the
server (``POST /v1/ota/keys``, judged on the same device fields as the check). A stored file is
read, checked against the sha256 recorded at install, decrypted, and checked again.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from tandem.bundle import Manifest
from tandem.device.keystore import KeyStore
from tandem.device.model_store import ModelStore, VersionRecord, sha256_hex
from tandem.device.ota_client import OtaClient
from tandem.errors import BundleError, ChecksumError
from tandem.security import encryption


def aad_for(plaintext_sha256: str) -> bytes:
    """Associated data of a file's encrypted blob: the plaintext's sha256 in hex, so a blob cannot
    stand in for another file encrypted under the same key (docs/ota.md)."""
    return plaintext_sha256.encode("ascii")


def delta_aad(from_sha256: str, to_sha256: str) -> bytes:
    """Associated data of an encrypted delta: the plaintext hashes of the file it patches and of
    the file it rebuilds."""
    return f"{from_sha256}:{to_sha256}".encode("ascii")


def manifest_of(data: bytes) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as e:
        raise BundleError(f"the model's manifest.json is not a valid bundle manifest:\n{e}") from e


class Vault:
    def __init__(self, store: ModelStore, model: str, client: OtaClient, keystore: KeyStore | None,
                 device: Callable[[], dict[str, object]]) -> None:
        self.store = store
        self.model = model
        self.client = client
        self.keystore = keystore
        self._device = device
        self._keys: dict[int, bytes] = {}  # by version

    def key(self, version: int) -> bytes:
        key = self._keys.get(version)
        if key is None and self.keystore is not None:
            key = self.keystore.get(self.model, version)
        if key is None:
            key = self.client.data_key(self.model, version, self._device())
            if self.keystore is not None and version in self.store.versions(self.model):
                self.keystore.put(self.model, version, key)
        self._keys[version] = key
        return key

    def forget(self, version: int | None = None) -> None:
        """Drop keys from memory: one version's, or (None) all."""
        if version is None:
            self._keys.clear()
        else:
            self._keys.pop(version, None)

    def open(self, rec: VersionRecord, name: str) -> bytes:
        """A stored file's plaintext: checked on disk, decrypted in memory, checked again."""
        data = self.store.read(self.model, rec.version, name)
        entry = rec.files[name]
        if entry.encrypted:
            data = encryption.decrypt(self.key(rec.version), data, aad_for(entry.sha256))
        if len(data) != entry.size or sha256_hex(data) != entry.sha256:
            raise ChecksumError(f"{name} of {self.model} v{rec.version} decrypts to bytes other than were installed; "
                                "delete this version and download it again")
        return data
