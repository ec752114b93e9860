"""Installing what a verified payload offers: plan each file, fetch it, verify, decrypt, install.

Each file comes from the cheapest source that works: an installed copy with the same plaintext
sha256 ("local"), the offered delta applied to the installed file it names ("delta"), or the
whole file ("full"). A delta is an optimisation: anything wrong with it costs the full download,
never the update. Every byte is checked against the signed sha256 and size, the model must open
in its runtime (ONNX Runtime, or LiteRT for a LiteRT variant), and only then does the store install it
(atomically, tandem.device.model_store).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from tandem import delta
from tandem.bundle import Manifest
from tandem.device import faults
from tandem.device.conditions import DeviceState, DownloadConditions, unmet
from tandem.device.model_store import ModelStore, StoredFile, VersionRecord, sha256_hex
from tandem.device.ota_client import OtaClient, ProgressCallback, Transfer
from tandem.device.payload import MANIFEST, FileInfo, Payload
from tandem.device.variants import open_model, variant_file, variant_key
from tandem.device.vault import Vault, aad_for, delta_aad, manifest_of
from tandem.errors import (
    BundleError,
    ChecksumError,
    DecryptionError,
    NotFound,
    ServerUnreachable,
    SignatureError,
    TandemError,
)
from tandem.security import encryption

log = logging.getLogger(__name__)
ENCRYPTED_SUFFIX = ".tde"


@dataclass(frozen=True)
class UpdateResult:
    """What one update did. ``status``: current (nothing to do), installed, deferred (conditions)."""

    status: Literal["current", "installed", "deferred"]
    version: int | None
    downloaded_bytes: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # file → "local" | "delta" | "full"
    seconds: float = 0.0


@dataclass
class _Plan:
    name: str
    info: FileInfo
    source: Literal["local", "delta", "full"]
    base_version: int | None = None  # local/delta: the installed version that holds the base file


class Installer:
    def __init__(self, store: ModelStore, vault: Vault, client: OtaClient, model: str, precision: str,
                 device_state: DeviceState, retries: int) -> None:
        self.store = store
        self.vault = vault
        self.client = client
        self.model = model
        self.precision = precision
        self.device_state = device_state
        self.retries = retries

    def _installed_version(self) -> int | None:
        pointer = self.store.current(self.model)
        return pointer.version if pointer else None

    def install(self, offered: Payload, conditions: DownloadConditions, progress: ProgressCallback | None,
                started: float) -> UpdateResult:
        assert offered.version is not None and offered.action != "stay"  # the updater installs offers only
        manifest_info = offered.files[MANIFEST]
        if manifest_info.sha256 != offered.manifest_sha256:
            raise SignatureError("the payload's manifest_sha256 and its manifest.json entry disagree; refusing it")
        plans = self._plan(offered)
        transfer = Transfer(sum(self._plan_bytes(p) for p in plans), progress)
        if transfer.total and (missing := unmet(conditions, self.device_state())):
            log.info("update of %s to v%s deferred: waiting for %s", self.model, offered.version, ", ".join(missing))
            return UpdateResult("deferred", self._installed_version())

        plain: dict[str, bytes] = {}
        blobs: dict[str, bytes] = {}
        sources: dict[str, str] = {}
        key: bytes | None = None
        for plan in plans:  # manifest.json first: it says which file is the model
            info = plan.info
            if info.encrypted is not None and key is None:
                key = self.vault.key(offered.version)
            data, blob, source = self._obtain(offered, plan, key, transfer)
            if len(data) != info.size or sha256_hex(data) != info.sha256:
                raise ChecksumError(f"{plan.name}: the bytes do not match the signed sha256/size; refusing them "
                                    "(the installed model is untouched)")
            if info.encrypted is not None and blob is None:
                blob = encryption.encrypt(key, data, aad_for(info.sha256))  # type: ignore[arg-type]
            plain[plan.name] = data
            blobs[plan.name] = blob if blob is not None else data
            sources[plan.name] = source

        manifest = manifest_of(plain[MANIFEST])
        variant, model_file = self._model_file(offered, manifest)
        stored = {}
        for name, info in offered.files.items():
            blob = blobs[name]
            stored[name] = StoredFile(info.sha256, info.size, name + (ENCRYPTED_SUFFIX if info.encrypted else ""),
                                      info.encrypted is not None, sha256_hex(blob), len(blob))
        record = VersionRecord(self.model, offered.version, offered.sequence, offered.channel, self.precision,
                               model_file, offered.manifest_sha256, stored, variant=variant)
        # The model must open before it becomes current: a file that verifies but does not load
        # (an exporter bug) would otherwise replace a working model.
        open_model(manifest, variant, plain[model_file], threads=1)
        self.store.install(record, {stored[n].stored: b for n, b in blobs.items()}, self.vault.keystore, key)
        for plan in plans:  # a delta's patch is spent once its file is installed (the store removes full files' parts)
            if plan.source == "delta" and plan.info.delta is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.store.part_path(self.model, plan.info.delta.sha256).unlink()
        return UpdateResult("installed", offered.version, transfer.fetched, sources, time.monotonic() - started)

    def _model_file(self, offered: Payload, manifest: Manifest) -> tuple[str, str]:
        """The model's variant and file: the payload's variant (a server from before variants names none: the
        ONNX model of the precision asked for, else fp32)."""
        for name, info in offered.files.items():
            if name == MANIFEST:
                continue
            listed = manifest.files.get(name)
            if listed is None or (listed.sha256, listed.size) != (info.sha256, info.size):
                raise ChecksumError(f"{name}: the signed payload and the bundle manifest disagree about this file; "
                                    "refusing the update")
        keys = [offered.variant] if offered.variant else [variant_key("onnx", p) for p in (self.precision, "fp32")]
        for key in keys:
            model_file = variant_file(manifest, key)
            if model_file is not None and model_file in offered.files:
                return key, model_file
        raise BundleError(f"the update for {self.model} v{offered.version} holds no model file of "
                          f"{' or '.join(keys)} (the manifest names {sorted(manifest.files)}, the payload lists "
                          f"{sorted(offered.files)})")

    def _plan(self, offered: Payload) -> list[_Plan]:
        """Where each file will come from: an installed copy, a delta against one, or the server."""
        held: dict[str, int] = {}  # plaintext sha256 → an installed version holding it
        pointer = self.store.current(self.model)
        for v in ([pointer.version] + ([pointer.previous] if pointer.previous is not None else [])) if pointer else []:
            try:
                for f in self.store.record(self.model, v).files.values():
                    held.setdefault(f.sha256, v)
            except (NotFound, ChecksumError):
                continue
        plans = []
        for name in sorted(offered.files, key=lambda n: (n != MANIFEST, n)):
            info = offered.files[name]
            if info.sha256 in held:
                plans.append(_Plan(name, info, "local", held[info.sha256]))
            elif info.delta is not None and held.get(info.delta.from_sha256) == info.delta.from_version:
                plans.append(_Plan(name, info, "delta", info.delta.from_version))
            else:
                plans.append(_Plan(name, info, "full"))
        return plans

    @staticmethod
    def _plan_bytes(plan: _Plan) -> int:
        if plan.source == "local":
            return 0
        return plan.info.delta.size if plan.source == "delta" else plan.info.download_size  # type: ignore[union-attr]

    def _obtain(self, offered: Payload, plan: _Plan, key: bytes | None,
                transfer: Transfer) -> tuple[bytes, bytes | None, str]:
        """``(plaintext, stored blob or None to encrypt, source)`` of one file."""
        info = plan.info
        if plan.source == "local":
            try:
                rec = self.store.record(self.model, plan.base_version)  # type: ignore[arg-type]
                name = next(n for n, f in rec.files.items() if f.sha256 == info.sha256)
                return self.vault.open(rec, name), None, "local"
            except (TandemError, OSError, StopIteration) as e:
                log.warning("%s: the installed copy cannot be reused (%s); downloading it", plan.name, e)
                transfer.grow(info.download_size)
        elif plan.source == "delta":
            try:
                return self._apply_delta(plan, key, transfer, offered.download_origins), None, "delta"
            except (TandemError, OSError) as e:
                # A delta is an optimisation: anything wrong with it costs the full download, never the update.
                log.warning("%s: the delta from v%s failed (%s); downloading the full file", plan.name,
                            plan.base_version, e)
                transfer.grow(info.download_size)
        blob = self._download(info.url, info.download_sha256, info.download_size, plan.name, transfer, info.mirrors,
                              offered.download_origins)
        if info.encrypted is None:
            return blob, None, "full"
        return encryption.decrypt(key, blob, aad_for(info.sha256)), blob, "full"  # type: ignore[arg-type]

    def _apply_delta(self, plan: _Plan, key: bytes | None, transfer: Transfer, origins: list[str]) -> bytes:
        d = plan.info.delta
        assert d is not None
        rec = self.store.record(self.model, d.from_version)
        base_name = next((n for n, f in rec.files.items() if f.sha256 == d.from_sha256), None)
        if base_name is None:
            raise NotFound(f"v{d.from_version} holds no file with sha256 {d.from_sha256[:12]}…")
        base = self.vault.open(rec, base_name)
        blob = self._download(d.url, d.sha256, d.size, plan.name + " (delta)", transfer, d.mirrors, origins)
        if key is None:
            raise DecryptionError(f"{plan.name}: the server offers a delta for a file it does not encrypt")
        patch = encryption.decrypt(key, blob, delta_aad(d.from_sha256, plan.info.sha256))
        faults.reached("delta")
        return delta.apply(base, patch, max_size=max(len(base), plan.info.size))

    def _download(self, url: str, sha256: str, size: int, name: str, transfer: Transfer, mirrors: list[str],
                  origins: list[str]) -> bytes:
        """The bytes from a mirror the signed payload names, else from ``url`` on the update server (ota_client)."""
        part = self.store.part_path(self.model, sha256)
        for attempt in range(self.retries + 1):
            try:
                return self.client.download(url, part, size, sha256, name, transfer, mirrors, origins)
            except ServerUnreachable as e:
                if attempt == self.retries:
                    raise
                log.info("%s; resuming (%d of %d)", e, attempt + 1, self.retries)
        raise AssertionError("unreachable")
