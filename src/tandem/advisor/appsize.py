"""The bytes an app gains by embedding a model, per platform and per variant of the bundle.

    app bytes = the variant's model file + the files the bundle's apps name (e.g. celebmatch's gallery)
                + the runtime library that runs that format on that platform

The model and app files are measured from the bundle (their sizes in the verified manifest); the
runtime library's size is measured or published (tandem.advisor.runtimes says which, and where
from). A variant whose format has no runtime on a platform (Core ML off Apple's, LiteRT in the
browser app) is left out of that platform; one whose runtime size is unknown has ``total_bytes``
None and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tandem.advisor.runtimes import PLATFORMS, RUNTIMES, RuntimeLibrary
from tandem.bundle import Manifest, delivery
from tandem.errors import InvalidRequest


@dataclass(frozen=True)
class VariantFile:
    key: str  # "onnx-fp32", "litert-int8", ...
    format: str
    precision: str
    file: str
    bytes: int


def variants(manifest: Manifest) -> dict[str, VariantFile]:
    """Every model of the bundle by variant key: its ``variants`` (schema 3), else its ONNX ``models``."""
    out: dict[str, VariantFile] = {}
    for precision, rel in manifest.models.items():
        out[f"onnx-{precision}"] = VariantFile(f"onnx-{precision}", "onnx", precision, rel, manifest.files[rel].size)
    for key, v in manifest.variants.items():
        out[key] = VariantFile(key, v.format, v.precision, v.file, manifest.files[v.file].size)
    return out


def app_files(manifest: Manifest) -> dict[str, int]:
    """Files the bundle's apps name (celebmatch's gallery), by size: an app that runs the model carries them
    too, as the OTA sends them with every variant."""
    return {rel: manifest.files[rel].size for rel in delivery.app_files(manifest)}


@dataclass(frozen=True)
class Embedding:
    """One variant embedded in an app on one platform."""

    platform: str
    variant: str
    format: str
    precision: str
    runtime: str
    model_bytes: int
    extra_bytes: int  # the app files
    runtime_bytes: int | None  # None: no figure for this runtime on this platform
    runtime_basis: str | None  # measured, published, built-in

    @property
    def total_bytes(self) -> int | None:
        return None if self.runtime_bytes is None else self.model_bytes + self.extra_bytes + self.runtime_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}


@dataclass
class AppSize:
    """Every variant of a bundle on every platform, and the runtime libraries' sizes behind them."""

    extras: dict[str, int]
    runtimes: dict[str, dict[str, RuntimeLibrary | None]]
    platforms: dict[str, dict[str, Embedding]] = field(default_factory=dict)  # platform → variant → embedding

    def smallest(self, platform: str) -> Embedding | None:
        """The variant that adds the fewest bytes on ``platform`` (of those whose runtime size is known)."""
        known = [e for e in self.platforms.get(platform, {}).values() if e.total_bytes is not None]
        return min(known, key=lambda e: (e.total_bytes, e.variant)) if known else None

    def runtime_bytes(self, platform: str, fmt: str) -> int | None:
        lib = self.runtimes.get(platform, {}).get(fmt)
        return None if lib is None else lib.bytes

    def to_dict(self) -> dict:
        smallest = {p: (e.variant if (e := self.smallest(p)) is not None else None) for p in self.platforms}
        return {
            "extras": self.extras,
            "runtimes": {p: {f: (lib.to_dict() if lib is not None else None) for f, lib in row.items()
                             if RUNTIMES[p].get(f) is not None}
                         for p, row in self.runtimes.items()},
            "platforms": {p: {k: e.to_dict() for k, e in row.items()} for p, row in self.platforms.items()},
            "smallest": smallest,
        }


def app_size(manifest: Manifest, runtimes: dict[str, dict[str, RuntimeLibrary | None]]) -> AppSize:
    """What embedding each variant of ``manifest`` adds to an app on each platform."""
    extras = app_files(manifest)
    out = AppSize(extras, runtimes)
    for platform in PLATFORMS:
        row: dict[str, Embedding] = {}
        for key, v in variants(manifest).items():
            runtime = RUNTIMES[platform].get(v.format)
            if runtime is None:
                continue
            lib = runtimes.get(platform, {}).get(v.format)
            row[key] = Embedding(platform, key, v.format, v.precision, runtime, v.bytes, sum(extras.values()),
                                 None if lib is None else lib.bytes, None if lib is None else lib.basis)
        out.platforms[platform] = row
    return out


def check_platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise InvalidRequest(f"no platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    return platform
