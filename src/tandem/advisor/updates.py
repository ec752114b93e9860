"""How easily a model is updated: the bytes an update sends over the air, and how long until the new
model answers — through an app-store release, over the air, or by moving a server alias.

**Bytes per update**, per variant: what a device downloads to go from one version to the next — the
variant's model file, the app files (celebmatch's gallery) and, with an ONNX model, the split heads,
each encrypted (AES-GCM adds
``encryption.OVERHEAD`` bytes per object). *Full*: every file whole. *Delta*: a TDP1 patch from the
older version's counterpart (tandem.delta, made as the registry's OTA makes them: tensor-level for
ONNX files, zstd patch-from for the rest), nothing for a file that did not change, the whole file
where the older version has no counterpart. Measured between two versions of a registry model
(:func:`measure_update`), or from one bundle alone: full only (:func:`bundle_update`).

**Update latency**, from the moment a new version is ready:

    app store  = the store's review (published figures, below) — then every user must install the
                 app update, days to weeks (not modelled)
    OTA        = wait for the app's next check (half the interval on average, the whole at worst)
                 + one check round trip + downloading the update's files on the network
    alias move = the server's next registry poll (TANDEM_ALIAS_POLL_S: half on average) + loading
                 the new version + its warm-up runs (docs/serving.md), all on the server
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from tandem import delta
from tandem.advisor.appsize import variants
from tandem.advisor.networks import NetworkProfile, transfer
from tandem.bundle import Bundle, Manifest
from tandem.bundle.delivery import delta_kind, device_files
from tandem.errors import InvalidRequest, TandemError
from tandem.security.encryption import OVERHEAD

# A signed OTA check: the device's request and the signed answer naming the files (docs/ota.md).
CHECK_UP_BYTES = 600
CHECK_DOWN_BYTES = 2_000
# One download request and its response headers.
GET_UP_BYTES = 400
GET_DOWN_HEADER_BYTES = 300
# How often an app asks for a new model by default: Firebase Remote Config's default minimum fetch
# interval, the usual cadence of an app's background configuration checks.
DEFAULT_CHECK_EVERY_S = 12 * 3600.0


@dataclass(frozen=True)
class StoreReview:
    platform: str
    review_s: float | None  # what to plan for; None: no store review
    up_to_s: float | None  # the published upper figure, where there is one
    summary: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


APP_STORES: dict[str, StoreReview] = {
    "ios": StoreReview(
        "ios", 24 * 3600.0, None, "App Store review: on average 90% of submissions are reviewed in under 24 hours",
        "Apple, App Review (developer.apple.com/distribute/app-review)"),
    "android": StoreReview(
        "android", 3 * 24 * 3600.0, 7 * 24 * 3600.0,
        "Google Play review: plan for at least 3 days; up to 7 days or longer in exceptional cases "
        "(updates of established apps often pass within hours)",
        "Play Console Help, as reported by XDA Developers (Aug 2019) and Android Police (Mar 2020)"),
    "web": StoreReview("web", 0.0, None, "no store: a new page (or model file) is live when deployed",
                       "the browser app is served by your own server"),
    "linux": StoreReview("linux", None, None, "your own distribution channel (a package repository, an installer)",
                         "no store figure"),
}


@dataclass(frozen=True)
class FileUpdate:
    path: str
    full_bytes: int  # encrypted whole file
    delta_bytes: int | None  # encrypted patch; 0: unchanged; None: no counterpart in the older version
    kind: str  # the patch's kind: onnx or bytes ("" where none was made)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VariantUpdate:
    variant: str
    files: list[FileUpdate]

    @property
    def full_bytes(self) -> int:
        return sum(f.full_bytes for f in self.files)

    @property
    def delta_bytes(self) -> int | None:
        """The update by patches where there are any; None when the model file has no counterpart."""
        model = self.files[0]
        if model.delta_bytes is None:
            return None
        return sum(f.full_bytes if f.delta_bytes is None else f.delta_bytes for f in self.files)

    @property
    def bytes(self) -> int:
        """What a device that holds the older version downloads: the delta when there is one, else the full files."""
        d = self.delta_bytes
        return self.full_bytes if d is None else d

    def to_dict(self) -> dict:
        return {"full_bytes": self.full_bytes, "delta_bytes": self.delta_bytes,
                "files": {f.path: f.to_dict() for f in self.files}}


@dataclass
class UpdateSizes:
    source: str  # "registry" or "bundle"
    model: str
    from_version: int | None
    to_version: int | None
    variants: dict[str, VariantUpdate] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "model": self.model, "from_version": self.from_version,
                "to_version": self.to_version, "variants": {k: v.to_dict() for k, v in self.variants.items()}}


def _full(size: int) -> int:
    return size + OVERHEAD


def sent_with(manifest: Manifest, variant: str) -> list[str]:
    """The files the OTA sends with a variant's model: the app files, and with an ONNX model the split heads."""
    return device_files(manifest, variant)[1:]  # the model comes first


def bundle_update(bundle: Bundle) -> UpdateSizes:
    """Bytes per update from one bundle: each variant's files, whole (no older version to patch from)."""
    m = bundle.manifest
    out = UpdateSizes("bundle", m.name, None, m.version)
    for key, v in variants(m).items():
        out.variants[key] = VariantUpdate(key, [FileUpdate(v.file, _full(v.bytes), None, ""),
                                               *(FileUpdate(rel, _full(m.files[rel].size), None, "")
                                                 for rel in sent_with(m, key))])
    return out


def _file_update(old: Bundle, old_rel: str | None, new: Bundle, new_rel: str) -> FileUpdate:
    size = new.manifest.files[new_rel].size
    if old_rel is None or old_rel not in old.manifest.files:
        return FileUpdate(new_rel, _full(size), None, "")
    if old.manifest.files[old_rel].sha256 == new.manifest.files[new_rel].sha256:
        return FileUpdate(new_rel, _full(size), 0, "")
    kind = delta_kind(new_rel)
    old_bytes, new_bytes = old.path(old_rel).read_bytes(), new.path(new_rel).read_bytes()
    try:
        patch = delta.diff(old_bytes, new_bytes, kind)
    except (TandemError, ValueError):  # no patch can be made (too large): the registry sends the whole file
        return FileUpdate(new_rel, _full(size), None, "")
    return FileUpdate(new_rel, _full(size), _full(len(patch)), delta.patch_kind(patch))


def measure_update(old: Bundle, new: Bundle) -> UpdateSizes:
    """Bytes per update from ``old`` to ``new`` (two versions of one model), per variant of ``new``."""
    om, nm = old.manifest, new.manifest
    if om.name != nm.name:
        raise InvalidRequest(f"an update goes between versions of one model, not from {om.name} to {nm.name}")
    before = variants(om)
    out = UpdateSizes("registry", nm.name, om.version, nm.version)
    for key, v in variants(nm).items():
        counterpart = before.get(key)
        files = [_file_update(old, counterpart.file if counterpart else None, new, v.file)]
        files += [_file_update(old, rel, new, rel) for rel in sent_with(nm, key)]
        out.variants[key] = VariantUpdate(key, files)
    return out


# --- latency -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OtaLatency:
    network: str
    download_s: float  # the check and the files on this network
    expected_s: float  # half the check interval + download
    worst_s: float  # the whole interval + download

    def to_dict(self) -> dict:
        return asdict(self)


def ota_download_s(network: NetworkProfile, file_bytes: Sequence[int]) -> float:
    """One check round trip, then one GET per file, on ``network`` (the advisor's transfer model)."""
    if not network.online:
        return math.inf
    t = transfer(network, CHECK_UP_BYTES, CHECK_DOWN_BYTES).total_ms
    t += sum(transfer(network, GET_UP_BYTES, n + GET_DOWN_HEADER_BYTES).total_ms for n in file_bytes if n > 0)
    return t / 1000.0


def ota_latency(network: NetworkProfile, file_bytes: Sequence[int], check_every_s: float) -> OtaLatency | None:
    """None offline: no update reaches a device until it is online."""
    if not network.online:
        return None
    d = ota_download_s(network, file_bytes)
    return OtaLatency(network.name, d, check_every_s / 2 + d, check_every_s + d)


@dataclass(frozen=True)
class AliasLatency:
    poll_s: float
    load_ms: float  # opening the new version's session, measured here × the server's speed factor
    warmup_ms: float  # its warm-up runs at batch 1 and at the batch size
    source: str

    @property
    def expected_s(self) -> float:
        return self.poll_s / 2 + (self.load_ms + self.warmup_ms) / 1000.0

    @property
    def worst_s(self) -> float:
        return self.poll_s + (self.load_ms + self.warmup_ms) / 1000.0

    def to_dict(self) -> dict:
        return {**asdict(self), "expected_s": self.expected_s, "worst_s": self.worst_s}


def alias_latency(*, poll_s: float, load_ms: float, warmup_runs: int, whole_ms: float, batch_ms: float,
                  speed_factor: float = 1.0) -> AliasLatency:
    """A server-side alias move: ``whole_ms``/``batch_ms`` are the model's batch-1 and batch-N times here."""
    if poll_s <= 0 or load_ms < 0 or warmup_runs < 0:
        raise InvalidRequest("alias poll interval must be > 0 s, load time and warm-up runs ≥ 0")
    return AliasLatency(poll_s, load_ms * speed_factor, warmup_runs * (whole_ms + batch_ms) * speed_factor,
                        f"the server polls the registry every {poll_s:g} s (TANDEM_ALIAS_POLL_S), then loads the "
                        f"version and warms it up with {warmup_runs} run(s) at batch 1 and at the batch size "
                        "(TANDEM_WARMUP_RUNS) before switching")


@dataclass
class UpdateLatency:
    variant: str  # the variant whose update the OTA figures download
    bytes: list[int]  # its files' bytes, as downloaded (delta where there is one)
    check_every_s: float
    ota: dict[str, OtaLatency | None]  # network → latency (None: offline)
    alias: AliasLatency
    stores: Mapping[str, StoreReview] = field(default_factory=lambda: APP_STORES)

    def to_dict(self) -> dict:
        return {
            "app_store": {p: s.to_dict() for p, s in self.stores.items()},
            "ota": {"variant": self.variant, "bytes": sum(self.bytes), "check_every_s": self.check_every_s,
                    "networks": {n: (o.to_dict() if o is not None else None) for n, o in self.ota.items()}},
            "alias": self.alias.to_dict(),
        }


def update_latency(sizes: UpdateSizes, variant: str, networks: Sequence[NetworkProfile], check_every_s: float,
                   alias: AliasLatency) -> UpdateLatency:
    if not check_every_s > 0:
        raise InvalidRequest(f"the OTA check interval must be > 0 s, got {check_every_s:g}")
    if variant not in sizes.variants:
        raise InvalidRequest(f"no variant {variant!r} in the update; it has {', '.join(sizes.variants)}")
    v = sizes.variants[variant]
    delta_known = v.delta_bytes is not None
    files = [(f.delta_bytes if delta_known and f.delta_bytes is not None else f.full_bytes) for f in v.files]
    return UpdateLatency(variant, files, check_every_s,
                         {n.name: ota_latency(n, files, check_every_s) for n in networks}, alias)
