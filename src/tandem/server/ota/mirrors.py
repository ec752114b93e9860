"""Where devices may fetch OTA bytes besides this server (docs/ota.md, "Downloads from storage or a CDN").

Every object a payload names is content-addressed and checked by the device against the signed sha256
(model files and patches are encrypted besides), so the bytes may come from anywhere. With
TANDEM_OTA_DOWNLOADS presigned or cdn, a schema-2 payload gives each object ``mirrors`` (absolute URLs the
device tries first) and lists the origins they are on in ``download_origins``; each object keeps this
server's own route as ``url``, which the device falls back to (and which older clients use alone). The
server then answers checks; the bytes come from the bucket or the CDN.

- ``Presigned``: a short-lived presigned GET URL of the S3 bucket that holds the artifacts. Signed on the
  check path (an HMAC computed here, ~10 µs) and reused while at least half its lifetime is left, so an
  answer never hands out a URL about to expire; the ``files`` a worker caches per generation hold none.
- ``Cdn``: BASE/ab/cdef… for objects the server has copied to the CDN's origin (TANDEM_OTA_PUBLISH), which
  holds only what devices download: manifests, encrypted model files and patches. The artifact store also
  holds every bundle's plaintext files, so it must never be the CDN's origin itself. An object not copied
  yet gets no mirror: devices download it from the server until it is.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from tandem.errors import ConfigError, TandemError
from tandem.protocol.origins import origin
from tandem.registry.artifacts import ArtifactStore, open_store
from tandem.settings import OtaSettings, RegistrySettings

log = logging.getLogger(__name__)
MAX_CACHED = 100_000  # presigned URLs a worker keeps (one per object: far more than any registry serves)
WARN_EVERY_S = 60.0


class Mirrors(Protocol):
    mode: str  # presigned | cdn: the metric label

    def url(self, sha256: str) -> str | None:
        """A URL the object can be downloaded from now, or None (the device then uses this server's route)."""
        ...

    def publish(self, sha256: str) -> bool:
        """Make the object downloadable there, in a thread (a no-op where nothing is copied); whether it was
        copied now."""
        ...


class _Presigning(Protocol):
    location: str

    def presign(self, sha256: str, lifetime: timedelta) -> str: ...


class Presigned:
    mode = "presigned"

    def __init__(self, store: _Presigning, lifetime_s: float) -> None:
        self.store = store
        self.lifetime = timedelta(seconds=lifetime_s)
        self._urls: dict[str, tuple[str, float]] = {}  # sha256 -> (URL, time.monotonic() it stops being handed out)
        self._warned = -WARN_EVERY_S

    def url(self, sha256: str) -> str | None:
        now = time.monotonic()
        hit = self._urls.get(sha256)
        if hit is not None and now < hit[1]:
            return hit[0]
        try:
            signed = self.store.presign(sha256, self.lifetime)
        except TandemError as e:  # no credentials to sign with right now: the answer names the server's route only
            if now - self._warned >= WARN_EVERY_S:
                self._warned = now
                log.warning("cannot presign OTA downloads (devices download from this server meanwhile): %s", e)
            return None
        if len(self._urls) >= MAX_CACHED:
            self._urls.clear()
        # Handed out for half its lifetime: every URL in an answer has at least that long left.
        self._urls[sha256] = (signed, now + self.lifetime.total_seconds() / 2)
        return signed

    def publish(self, sha256: str) -> bool:
        return False  # the bucket is where the object is already


class Cdn:
    mode = "cdn"

    def __init__(self, base: str, source: ArtifactStore, target: ArtifactStore) -> None:
        self.base = base
        self.source = source
        self.target = target
        self._published: set[str] = set()
        self._lock = threading.Lock()

    def url(self, sha256: str) -> str | None:
        return f"{self.base}/{sha256[:2]}/{sha256[2:]}" if sha256 in self._published else None

    def publish(self, sha256: str) -> bool:
        if sha256 in self._published:
            return False
        copied = False
        if not self.target.exists(sha256):
            # Checked against its sha256 on the way (put_file with the expected digest): a damaged store object
            # is never published.
            self.target.put_file(self.source.path(sha256), sha256)
            copied = True
        with self._lock:
            self._published.add(sha256)
        return copied


@dataclass(frozen=True)
class Mirrored:
    """A payload's ``files`` with their mirrors, the origins those are on, and what could have one but has none
    yet (to publish)."""

    files: dict[str, Any]
    origins: list[str]
    unpublished: list[str]
    counts: dict[str, int]  # object kind (manifest, file, delta) -> objects given a mirror


def mirrored(files: dict[str, Any], mirrors: Mirrors) -> Mirrored:
    """``files`` (a payload's, as cached: not changed) with a ``mirrors`` list on each object that has one."""
    out: dict[str, Any] = {}
    origins: set[str] = set()
    unpublished: list[str] = []
    counts: dict[str, int] = {}

    def add(entry: dict[str, Any], sha: str, kind: str) -> dict[str, Any]:
        url = mirrors.url(sha)
        if url is None:
            unpublished.append(sha)
            return entry
        origins.add(origin(url))
        counts[kind] = counts.get(kind, 0) + 1
        return {**entry, "mirrors": [url]}

    for name, entry in files.items():
        encrypted = entry.get("encrypted")
        new = add(entry, encrypted["sha256"] if encrypted else entry["sha256"], "file" if encrypted else "manifest")
        if "delta" in entry:
            new = {**new, "delta": add(entry["delta"], entry["delta"]["sha256"], "delta")}
        out[name] = new
    return Mirrored(out, sorted(origins), unpublished, counts)


def open_mirrors(ota: OtaSettings, registry: RegistrySettings, store: ArtifactStore) -> Mirrors | None:
    """The mirrors TANDEM_OTA_DOWNLOADS asks for (None: this server's routes only); ConfigError saying what to
    set when the settings do not fit together."""
    mode = ota.ota_downloads
    if mode == "server":
        return None
    if mode == "presigned":
        if not hasattr(store, "presign"):
            raise ConfigError(f"TANDEM_OTA_DOWNLOADS=presigned hands devices presigned URLs of an S3 bucket, but the "
                              f"artifacts are in {store.location}: set TANDEM_ARTIFACTS=s3://BUCKET/PREFIX, or use "
                              "TANDEM_OTA_DOWNLOADS=cdn (or server)")
        return Presigned(store, ota.ota_presign_s)  # type: ignore[arg-type]  # it has presign(): an S3Store
    base = (ota.ota_download_base or "").strip().rstrip("/")
    if not base:
        raise ConfigError("TANDEM_OTA_DOWNLOADS=cdn needs TANDEM_OTA_DOWNLOAD_BASE, the CDN's base URL "
                          "(e.g. https://cdn.example.com/tandem)")
    try:
        origin(base + "/")
    except ValueError as e:
        raise ConfigError(f"TANDEM_OTA_DOWNLOAD_BASE={base!r} is not a CDN base URL ({e}); give "
                          "https://HOST[/PATH], without a user, a query or a fragment") from e
    if "?" in base:
        raise ConfigError(f"TANDEM_OTA_DOWNLOAD_BASE={base!r} has a query: give https://HOST[/PATH]; objects are at "
                          "BASE/ab/cdef… (their sha256)")
    where = (ota.ota_publish or "").strip()
    if not where or not (where.lower().startswith("s3://") or Path(where).expanduser().is_absolute()):
        raise ConfigError("TANDEM_OTA_DOWNLOADS=cdn needs TANDEM_OTA_PUBLISH: where the server copies what devices "
                          "download, for the CDN to serve (s3://BUCKET/PREFIX, or an absolute folder), not "
                          f"{where!r}")
    target = open_store(registry.model_copy(update={"artifacts": where}))
    here, there = store.location.rstrip("/"), target.location.rstrip("/")
    if here == there or here.startswith(there + "/"):
        raise ConfigError(f"TANDEM_OTA_PUBLISH={where!r} holds the artifact store ({store.location}), whose "
                          "plaintext bundle files a CDN must never serve: publish to a prefix or folder of its own")
    return Cdn(base, store, target)
