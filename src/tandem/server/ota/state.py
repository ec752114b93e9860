"""What a server worker knows about OTA for one registry generation, indexed for the check route.

Built in a thread from the registry's snapshot whenever the generation moves; the routes then answer
from these dictionaries without touching the database. The ``files`` part of a payload is built once
per (model, version, variant, installed version) and kept until the next generation.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tandem.bundle import MANIFEST, Manifest
from tandem.bundle.delivery import device_files
from tandem.errors import NotFound, quoted
from tandem.registry.ota import variants
from tandem.registry.ota.objects import DELTA, FILE, source_path
from tandem.registry.ota.records import OtaObjectInfo
from tandem.registry.ota.rollout import Decision, Device, Rule, decide, offered, offers
from tandem.registry.ota.snapshot import OtaSnapshot
from tandem.security.endorsement import MAX_RETIRED

ALG = "AES-256-GCM"
FILES_URL = "/v1/ota/files/"
DELTAS_URL = "/v1/ota/deltas/"
LIVE = ("active", "halted")


@dataclass(frozen=True)
class Served:
    """An object the download routes may send."""

    sha256: str
    size: int
    kind: str  # manifest | file | delta
    model: str = ""  # whose: a caller whose model scope leaves the model out gets 404 for it


@dataclass
class Files:
    """The ``files`` of a payload, or what must be made first."""

    precision: str
    variant: str  # the model's variant key (onnx-fp32, litert-int8, …)
    files: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # paths without an encrypted object yet
    wanted: list[tuple[str, int, str]] = field(default_factory=list)  # (path, from version, from sha256): no delta yet


def unknown_model(name: str) -> NotFound:
    """The answer for a model that does not exist, and, word for word, for one outside the caller's model
    scope: a device must not learn which models a server holds beyond its own."""
    return NotFound(f"no model named {quoted(name)} in the registry; check the model name the app asks for")


class OtaState:
    def __init__(self, snap: OtaSnapshot, manifest: Callable[[str], Manifest], size: Callable[[str], int]) -> None:
        self.generation = snap.generation
        self.models = snap.models
        self.versions = snap.versions
        self.manifests: dict[tuple[str, int], Manifest] = {
            (name, v.version): manifest(v.manifest_sha256) for name, vs in snap.versions.items() for v in vs.values()}
        self.channels: dict[str, set[str]] = {}
        rules: dict[tuple[str, str], list[Rule]] = {}
        self.released: set[tuple[str, int, str]] = set()
        # Each release's variants (variants.py): the model files it offers by key, after what it holds back.
        self.release_variants: dict[tuple[str, str, int], dict[str, str]] = {}
        offered: set[tuple[str, int]] = set()
        # The model files each offered version's live releases and pins offer: the only ones downloaded.
        self.offered_files: dict[tuple[str, int], set[str]] = {}
        for r in snap.releases:
            self.channels.setdefault(r.name, set()).add(r.channel)
            offers_now = self.release_variants[(r.name, r.channel, r.version)] = variants.allowed(
                variants.available(self.manifests[(r.name, r.version)]), r.variants)
            rules.setdefault((r.name, r.channel), []).append(Rule.of(
                r.version, r.state, r.percent, r.min_app_version, r.max_app_version, r.platforms, r.min_os_version,
                r.min_ram_mb, {variants.runtime_of(k) for k in offers_now}))
            self.released.add((r.name, r.version, r.channel))
            if r.state in LIVE:
                offered.add((r.name, r.version))
                self.offered_files.setdefault((r.name, r.version), set()).update(offers_now.values())
        self.rules = {k: tuple(v) for k, v in rules.items()}
        self.pins: dict[tuple[str, str], dict[str, int]] = {}
        for p in snap.pins:
            self.channels.setdefault(p.name, set()).add(p.channel)
            self.pins.setdefault((p.name, p.channel), {})[p.device_id] = p.version
            offered.add((p.name, p.version))
            self.offered_files.setdefault((p.name, p.version), set()).update(
                self.variants_of(p.name, p.channel, p.version).values())
        self.offered = offered
        self._files: dict[tuple[str, int, str, int | None], Files] = {}
        self.served: dict[str, Served] = {}
        # The apps each model's versions declare (a device key's model scope may name an app).
        self.apps: dict[str, frozenset[str]] = {}
        for (name, _v), m in self.manifests.items():
            self.apps[name] = self.apps.get(name, frozenset()) | frozenset(m.apps)
        for name, version in offered:
            sha = snap.versions[name][version].manifest_sha256
            self.served[sha] = Served(sha, size(sha), "manifest", name)
        self.file_objects: dict[tuple[str, int, str], OtaObjectInfo] = {}
        self.delta_objects: dict[tuple[str, int, str, str], OtaObjectInfo] = {}
        self.delta_urls: dict[tuple[str, str], Served] = {}  # (from plaintext sha, target blob sha) -> patch
        self.add_objects(snap.objects)
        self.data_keys = dict(snap.data_keys)
        self.public_keys = [{"key_id": k.key_id, "public_key": k.public_key, "current": k.current, "state": k.state,
                             "created": k.created.isoformat(),
                             **({"activates": k.activates.isoformat()} if k.activates and k.state == "next" else {})}
                            for k in snap.signing_keys if k.retired is None]
        # Rotation (docs/ota.md, "Signing keys"): every envelope carries the endorsements, every schema-2 payload
        # the retired keys; the next key's activation is checked lazily, when this worker next signs or polls.
        self.endorsements = snap.endorsements
        retired = sorted((k for k in snap.signing_keys if k.retired is not None), key=lambda k: (k.retired, k.key_id))
        self.retired_keys = [k.key_id for k in retired][-MAX_RETIRED:]
        self.next_activation: datetime | None = min(
            (k.activates for k in snap.signing_keys if k.state == "next" and k.activates is not None), default=None)
        current = next((k for k in snap.signing_keys if k.current), None)
        self.key_id = current.key_id if current is not None else None
        # One key object for the generation: loading the seed per request would cost as much as signing.
        self.signer = Ed25519PrivateKey.from_private_bytes(snap.signer.seed) if snap.signer is not None else None

    # --- objects ------------------------------------------------------------------------------

    def add_objects(self, objects: Iterable[OtaObjectInfo]) -> None:
        """Index objects (from the snapshot, or made by this worker since); offered versions' are served."""
        for o in objects:
            if o.kind == FILE:
                self.file_objects[(o.name, o.version, o.path)] = o
            elif o.kind == DELTA:
                self.delta_objects[(o.name, o.version, o.path, o.from_sha256)] = o
        for o in objects:
            if (o.name, o.version) not in self.offered or not self._offered_file(o.name, o.version, o.path):
                continue
            if o.kind == FILE:
                self.served[o.sha256] = Served(o.sha256, o.size, "file", o.name)
            elif o.kind == DELTA:
                target = self.file_objects.get((o.name, o.version, o.path))
                if target is not None:
                    self.delta_urls[(o.from_sha256, target.sha256)] = Served(o.sha256, o.size, "delta", o.name)
        self._files.clear()  # payload files built before may now have a delta, or a re-made object

    def _offered_file(self, name: str, version: int, path: str) -> bool:
        """Whether a file of the version may be downloaded: not the model of a variant every live release (and
        pin) of it holds back."""
        models = variants.available(self.manifests[(name, version)]).values()
        return path not in models or path in self.offered_files.get((name, version), set())

    # --- variants -----------------------------------------------------------------------------

    def variants_of(self, name: str, channel: str, version: int) -> dict[str, str]:
        """The variants ``version`` offers on ``channel`` (key -> file): its release's there; a version pinned
        without a release on the channel offers all of its own."""
        found = self.release_variants.get((name, channel, version))
        return found if found is not None else variants.available(self.manifests[(name, version)])

    def variant(self, name: str, channel: str, version: int, runtime: str, precision: str) -> str | None:
        """The variant a device running ``runtime`` and preferring ``precision`` gets of ``version`` on
        ``channel`` (variants.choose); None when the release offers that runtime none."""
        return variants.choose(self.variants_of(name, channel, version), runtime, precision)

    # --- decisions ----------------------------------------------------------------------------

    def apps_of(self, name: str) -> frozenset[str]:
        return self.apps.get(name, frozenset())

    def check_channel(self, name: str, channel: str) -> None:
        if name not in self.models:
            raise unknown_model(name)
        channels = self.channels.get(name, set())
        if channel not in channels:
            raise NotFound(f"model {name} has no releases on channel {channel!r} (channels: "
                           f"{', '.join(sorted(channels)) or 'none'}); release a version with "
                           f"`tandem release {name} VERSION --channel {channel}`")

    def decide(self, name: str, channel: str, device: Device) -> Decision | None:
        return decide(name, channel, self.rules.get((name, channel), ()), self.pins.get((name, channel), {}), device)

    def offers(self, name: str, channel: str, device: Device, version: int) -> bool:
        return offers(name, channel, self.rules.get((name, channel), ()), self.pins.get((name, channel), {}), device,
                      version)

    def was_offered(self, name: str, channel: str, device: Device, version: int) -> bool:
        """Whether a release (in any state) or a pin of ``version`` covers the device: whose health counts."""
        return offered(name, channel, self.rules.get((name, channel), ()), self.pins.get((name, channel), {}), device,
                       version)

    # --- payload files ------------------------------------------------------------------------

    def files(self, name: str, version: int, variant: str, installed: int | None,
              no_delta: set[tuple[str, int, str, str]]) -> Files:
        # Only an older version the registry holds can be patched from; any other installed version
        # (none, newer, unknown) gets the same full files, and shares their cache entry: a device
        # sending arbitrary numbers must not grow the cache.
        source = installed if installed is not None and installed < version and installed in self.versions[name] \
            else None
        key = (name, version, variant, source)
        hit = self._files.get(key)
        if hit is not None:
            return hit
        out = self._build_files(name, version, variant, source, no_delta)
        if not out.missing and not out.wanted:  # complete: the same for every device until the generation moves
            self._files[key] = out
        return out

    def _build_files(self, name: str, version: int, variant: str, from_version: int | None,
                     no_delta: set[tuple[str, int, str, str]]) -> Files:
        stored = self.versions[name][version]
        manifest = self.manifests[(name, version)]
        out = Files(variants.precision_of(variant), variant)
        out.files[MANIFEST] = {"sha256": stored.manifest_sha256, "size": self.served[stored.manifest_sha256].size,
                               "url": FILES_URL + stored.manifest_sha256}
        source = self.versions[name][from_version] if from_version is not None else None
        key = self.data_keys.get((name, version))
        for path in device_files(manifest, variant):
            obj = self.file_objects.get((name, version, path))
            if obj is None:
                out.missing.append(path)
                continue
            entry: dict[str, Any] = {
                "sha256": obj.plain_sha256, "size": manifest.files[path].size, "url": FILES_URL + obj.sha256,
                "encrypted": {"alg": ALG, "key_id": key[0] if key else None, "sha256": obj.sha256, "size": obj.size}}
            if source is not None:
                src_path = source_path(manifest, self.manifests[(name, source.version)], path)
                from_sha = source.files.get(src_path) if src_path is not None else None
                if from_sha is not None and from_sha != obj.plain_sha256:
                    delta = self.delta_objects.get((name, version, path, from_sha))
                    if delta is None:
                        if (name, version, path, from_sha) not in no_delta:
                            out.wanted.append((path, source.version, from_sha))
                    elif delta.size < obj.size:  # a patch no smaller than the file is not worth a second format
                        entry["delta"] = {"from_version": source.version, "from_sha256": from_sha,
                                          "sha256": delta.sha256, "size": delta.size,
                                          "url": f"{DELTAS_URL}{from_sha}/{obj.sha256}"}
            out.files[path] = entry
        return out

    # --- signing ------------------------------------------------------------------------------

    def activation_due(self, now: datetime) -> bool:
        """Whether a next signing key should have started signing by ``now``."""
        return self.next_activation is not None and now >= self.next_activation

    def sign(self, payload: bytes) -> dict[str, Any]:
        assert self.signer is not None and self.key_id is not None
        envelope: dict[str, Any] = {"payload": base64.b64encode(payload).decode(),
                                    "signature": base64.b64encode(self.signer.sign(payload)).decode(),
                                    "key_id": self.key_id}
        if self.endorsements:
            envelope["endorsements"] = self.endorsements
        return envelope
