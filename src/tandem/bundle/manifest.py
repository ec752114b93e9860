"""The bundle manifest: the format of a folder holding a model in open formats, and the checks on it.

docs/bundle.md is the specification; this module reads, writes and verifies it. Loading a bundle
verifies it: a missing file, a size or sha256 mismatch, or another schema version is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from tandem import atomic
from tandem.bundle.preprocess import PreprocessSpec
from tandem.errors import BundleError

# Schema 1 bundles (image classification only) still load; schema 2 adds the face-embedding and
# image-to-image tasks (an image-to-image bundle: any height and width in, a picture out; docs/bundle.md);
# schema 3 adds `variants` (the model in other formats: LiteRT, ExecuTorch, ...). A bundle is written with
# the oldest schema that describes it: one without variants stays schema 2, so the Tandems (and the apps in
# the field) that read only 1 and 2 still take it.
VARIANTS_SCHEMA = 3
SCHEMA_VERSION = VARIANTS_SCHEMA
READABLE_SCHEMAS = (1, 2, 3)
Task = Literal["image-classification", "face-embedding", "image-to-image"]
MANIFEST = "manifest.json"
# Files that are not covered by the manifest's own hash list.
UNHASHED = {MANIFEST, "signature"}

Precision = Literal["fp32", "int8"]
# A model's name: it becomes a folder name, a URL path segment and a database key.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
# The server serves split k of model NAME's version as model ``NAME.tail.K`` (docs/serving.md);
# names of that shape are reserved for tails.
_TAIL_RE = re.compile(r"^(?P<model>.+)\.tail\.(?P<k>[1-9][0-9]{0,8})$")


def tail_name(model: str, k: int) -> str:
    """The OIP model name under which the server serves the tail of ``model``'s split at ``k``."""
    return f"{model}.tail.{k}"


def parse_tail_name(name: str) -> tuple[str, int] | None:
    """(model, k) for a tail's name, None for any other name."""
    m = _TAIL_RE.fullmatch(name)
    return (m.group("model"), int(m.group("k"))) if m else None


class TensorSpec(BaseModel):
    name: str
    dtype: Literal["uint8", "float32", "int64"]
    # -1 marks a dynamic axis (the batch).
    shape: list[int]


class FileEntry(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Fingerprint(BaseModel):
    data: str = Field(description="sha256 over the sorted (relative path, size, label) of the training data")
    config: str = Field(description="sha256 over the training configuration JSON")


class SplitSpec(BaseModel):
    """One split of the fp32 model: the head runs on the device, sends ``tensor``, the tail runs on the server."""

    k: int = Field(ge=1, description="compute nodes (ONNX nodes that touch activations, in file order) in the head")
    head: str = Field(description="ONNX file: pixels in, ``tensor`` out")
    tail: str = Field(description="ONNX file: ``tensor`` in, the model's outputs out")
    tensor: TensorSpec


Format = Literal["onnx", "litert", "executorch", "coreml"]
VariantPrecision = Literal["fp32", "fp16", "int8"]


class Software(BaseModel):
    """A package by its name and version, e.g. ai-edge-litert 2.3.0."""

    name: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=100)


class Parity(BaseModel):
    """How closely a variant reproduces the PyTorch model, measured at export by running the variant."""

    reference: Literal["torch"] = "torch"
    images: int = Field(ge=1, description="photos compared")
    on: Literal["test", "train"] = Field(description="the run's split the photos come from")
    max_abs: float = Field(ge=0, description="largest absolute difference over every output and photo")
    top1_agreement: float | None = Field(default=None, ge=0, le=1,
                                         description="share of photos with the same top class (classifiers)")
    psnr_db: float | None = Field(default=None, ge=0, description="image-to-image models: PSNR in dB of the "
                                  "variant's 8-bit pictures against PyTorch's, over every photo (100: identical)")


class SpecCheck(BaseModel):
    """What was checked of a variant that cannot run where it is exported: a Core ML model predicts only on
    Apple's systems, so its converted program is read instead of run (docs/bundle.md, "Variants")."""

    spec_ok: bool = Field(description="the program takes and gives what `inputs` and `outputs` say, at the precision")
    ops: int = Field(ge=0, description="operations of the program, constants not counted")
    op_types: dict[str, int] = Field(default_factory=dict, description="those operations by type")
    checked: list[str] = Field(default_factory=list, description="each check made, in words")
    not_measured: str = Field(description="why parity was not measured")


class Quantization(BaseModel):
    """How a quantised variant was made (docs/bundle.md, "Variants"): informative, as `converter` is. Its
    `precision` names the weights; the activations may differ (int16 activations with int8 weights stay int8)."""

    recipe: str = Field(min_length=1, max_length=100, description="the quantiser's own name for its settings")
    weights: Literal["int8"] = Field(description="symmetric, per output channel")
    activations: Literal["int8", "int16", "float32"] = Field(description="per tensor, ranges fixed at export")
    calibration_images: int = Field(ge=1, description="training photos whose activations set the ranges")
    ranges: Literal["min-max"] = Field(description="each range: the smallest and largest value over those photos")
    float_ops: dict[str, int] = Field(default_factory=dict,
                                      description="the file's operations that compute in float32, counted by type")


class Variant(BaseModel):
    """One model file in one format and precision (docs/bundle.md, "Variants")."""

    format: Format
    precision: VariantPrecision
    file: str
    # The image input's axes. Every variant takes uint8 RGB pixels and normalises inside its graph.
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    # As the file names them; LiteRT: the keys of `signature`'s inputs and outputs.
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    signature: str | None = Field(default=None, description="LiteRT: the signature to run")
    runtime: Software = Field(description="the runtime it was made and checked for")
    converter: Software | None = None
    # None only for a variant that cannot run where it was exported (Core ML on Linux); `spec_check` then
    # says what was checked instead.
    parity: Parity | None
    spec_check: SpecCheck | None = Field(default=None, exclude_if=lambda v: v is None)
    # Written for litert-int8 (absent elsewhere, so manifests from before it read and hash the same).
    quantization: Quantization | None = Field(default=None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _checked_somehow(self) -> Variant:
        if self.parity is None and (self.format != "coreml" or self.spec_check is None or not self.spec_check.spec_ok):
            raise ValueError(f"a {self.format} variant needs its parity measured at export (only a Core ML variant, "
                             "which runs on Apple's systems alone, may give a passed spec_check instead)")
        if self.quantization is not None and self.quantization.weights != self.precision:
            raise ValueError(f"a {self.precision} variant cannot have {self.quantization.weights} weights: its precision "
                             "names its weights")
        return self


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(default=None, description="set by the registry on push")
    parent_version: int | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    task: Task = "image-classification"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: PreprocessSpec
    labels: list[str]
    models: dict[Precision, str]
    metrics: dict[str, float | int] = Field(default_factory=dict)
    fingerprint: Fingerprint | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    # Optional (docs/bundle.md): left out of manifest.json when empty, so bundles without splits
    # read and hash exactly as before, and older readers ignore it.
    splits: list[SplitSpec] = Field(default_factory=list, exclude_if=lambda v: not v)
    # Schema 3: every model of the bundle by "format-precision" (the ONNX ones of `models` too); absent
    # from a bundle that has only its ONNX models.
    variants: dict[str, Variant] = Field(default_factory=dict, exclude_if=lambda v: not v)

    @model_validator(mode="before")
    @classmethod
    def _oldest_schema_that_fits(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema_version" not in data:
            data = {**data, "schema_version": VARIANTS_SCHEMA if data.get("variants") else 2}
        return data

    @model_validator(mode="after")
    def _follows_the_spec(self) -> Manifest:
        if "fp32" not in self.models:
            raise ValueError("models must name an fp32 model")
        if [t.name for t in self.inputs] != ["pixels"] or self.inputs[0].dtype != "uint8":
            raise ValueError(f"an {self.task} bundle takes exactly one input: uint8 'pixels'")
        # Which outputs a bundle needs is its apps' business (tandem/apps/: classify reads probabilities,
        # celebmatch an embedding); the format only asks that outputs be named, once each.
        names = [t.name for t in self.outputs]
        if not names:
            raise ValueError(f"an {self.task} bundle gives at least one output")
        if len(set(names)) != len(names):
            raise ValueError(f"outputs must have distinct names, found {names}")
        if self.schema_version == 1 and self.task != "image-classification":
            raise ValueError(f"schema_version 1 knows only image-classification, not {self.task}")
        bad = [k for k, v in self.metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"metrics must be finite numbers: {', '.join(bad)}")
        ks = [s.k for s in self.splits]
        if len(ks) != len(set(ks)):
            raise ValueError(f"splits must have distinct k, found {ks}")
        if self.variants:
            self._check_variants()
        return self

    def _check_variants(self) -> None:
        if self.schema_version < VARIANTS_SCHEMA:
            raise ValueError(f"variants need schema_version {VARIANTS_SCHEMA}, found {self.schema_version}")
        pixels = self.inputs[0]
        outputs = {t.name: t.dtype for t in self.outputs}
        for key, v in self.variants.items():
            if key != f"{v.format}-{v.precision}":
                raise ValueError(f"variant {key!r} is a {v.format} {v.precision} model; its key must be "
                                 f"'{v.format}-{v.precision}'")
            if v.format == "onnx" and {str(p): f for p, f in self.models.items()}.get(v.precision) != v.file:
                raise ValueError(f"variant {key}: file {v.file!r} is not models.{v.precision}")
            # The preprocessing holds for every variant: uint8 pixels in, the same height and width; where the
            # bundle's model takes any height or width (-1: image-to-image), a variant may fix it.
            if ([t.name for t in v.inputs] != ["pixels"] or v.inputs[0].dtype != "uint8" or v.layout != "NHWC"
                    or not _fits(v.inputs[0].shape[1:], pixels.shape[1:])):
                raise ValueError(f"variant {key}: takes {[t.model_dump() for t in v.inputs]} ({v.layout}); every "
                                 f"variant takes the bundle's input, uint8 'pixels' NHWC {pixels.shape[1:]} "
                                 "(a -1 there may be fixed)")
            got = {t.name: t.dtype for t in v.outputs}
            if got != outputs:
                raise ValueError(f"variant {key}: outputs {got} are not the bundle's {outputs}")

    def split(self, k: int) -> SplitSpec:
        for s in self.splits:
            if s.k == k:
                return s
        have = ", ".join(str(s.k) for s in self.splits) or "none"
        raise BundleError(f"{self.name}: no split at k={k} in this bundle (it has: {have}); "
                          f"add one with `tandem split BUNDLE {k}`")


def _fits(variant: list[int], bundle: list[int]) -> bool:
    """A variant's input dimensions (after the batch) against the bundle's: equal, or fixed where the bundle's is -1."""
    return len(variant) == len(bundle) and all(v == b or (b == -1 and v > 0) for v, b in zip(variant, bundle, strict=True))


MAX_PATH_CHARS = 255
_DRIVE = re.compile(r"^[A-Za-z]:")


def normal_path(rel: object) -> str:
    """The normal form of a file name a manifest lists: a relative POSIX path inside the bundle, or
    BundleError saying why it is none (absolute, a drive, a backslash, ``..``, ``.``, empty parts, NUL,
    control characters, too long)."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"manifest file name {rel!r:.80} is not a file name")
    if len(rel) > MAX_PATH_CHARS or not rel.isprintable() or "\\" in rel or rel.startswith("/") or _DRIVE.match(rel):
        raise BundleError(f"manifest file name {rel[:80]!r} is not a relative path inside the bundle (no absolute "
                          f"or drive paths, no backslashes or control characters, at most {MAX_PATH_CHARS} characters)")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        kept = "/".join(p for p in parts if p not in ("", "."))
        raise BundleError(f"manifest file name {rel[:80]!r} has an empty, '.' or '..' part; list files by their "
                          f"plain path inside the bundle" + (f" ({kept[:80]!r})" if ".." not in parts and kept else ""))
    return unicodedata.normalize("NFC", rel)


def check_paths(manifest: Manifest) -> None:
    """Every file name the manifest lists or refers to is a plain relative path in its normal form, and no
    two name the same file once normalised (case and Unicode folded, as devices' file systems may)."""
    seen: dict[str, str] = {}
    for rel in manifest.files:
        norm = normal_path(rel)
        if norm != rel:
            raise BundleError(f"manifest file name {rel[:80]!r} is not in Unicode normal form NFC; list it as "
                              f"{norm[:80]!r}")
        if rel in UNHASHED:
            raise BundleError(f"manifest lists {rel!r} among its files; that name is the bundle's own")
        folded = norm.casefold()
        if folded in seen:
            raise BundleError(f"manifest lists {seen[folded][:80]!r} and {rel[:80]!r}, the same file on a file "
                              "system that folds case; rename one")
        seen[folded] = rel
    folders = {p.casefold() for f in manifest.files for p in _parents(f)}
    clash = sorted(f for f in seen if f in folders)
    if clash:
        raise BundleError(f"manifest file name {seen[clash[0]][:80]!r} is also a folder of other files")
    for rel in [*manifest.models.values(), *(f for s in manifest.splits for f in (s.head, s.tail)),
                *(v.file for v in manifest.variants.values())]:
        if rel not in manifest.files:
            normal_path(rel)
            raise BundleError(f"manifest refers to {rel[:80]!r}, which its files do not list")


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), size=path.stat().st_size)


class Bundle:
    """A verified bundle on disk. Build one with :func:`write_manifest`, open one with :meth:`load`."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def load(cls, path: Path | str, verify: bool = True) -> Bundle:
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"{root}: no such bundle folder; create one with `tandem export RUN_DIR --out {root}`")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{root}: no {MANIFEST}; this is not a bundle (re-export it)")
        try:
            raw = json.loads(manifest_path.read_text("utf-8"))
        # ValueError: also undecodable UTF-8 and integers past Python's digit limit; RecursionError:
        # arrays nested deeper than the parser's recursion.
        except (ValueError, RecursionError) as e:
            raise BundleError(f"{manifest_path}: not valid JSON ({str(e)[:200]}); re-export the bundle") from e
        if not isinstance(raw, dict):
            raise BundleError(f"{manifest_path}: expected a JSON object")
        found = raw.get("schema_version")
        if isinstance(found, bool) or found not in READABLE_SCHEMAS:
            raise BundleError(
                f"{manifest_path}: schema_version {found!r}, but this Tandem reads schema_version "
                f"{' or '.join(map(str, READABLE_SCHEMAS))}; use the Tandem release that wrote it, or re-export the bundle"
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as e:
            raise BundleError(f"{manifest_path}: invalid manifest:\n{e}") from e
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every listed file's presence, size and sha256, and that required files are listed."""
        m = self.manifest
        for rel in m.models.values():
            if rel not in m.files:
                raise BundleError(f"{self.root}: model file {rel} is not listed in the manifest's files")
        for split in m.splits:
            for rel in (split.head, split.tail):
                if rel not in m.files:
                    raise BundleError(f"{self.root}: split file {rel} (k={split.k}) is not listed in the manifest's files")
        for key, variant in m.variants.items():
            if variant.file not in m.files:
                raise BundleError(f"{self.root}: variant file {variant.file} ({key}) is not listed in the manifest's files")
        for rel, entry in m.files.items():
            try:
                self._verify_file(rel, entry)
            except OSError as e:  # a name too long for the file system, a file that cannot be read
                raise BundleError(f"{self.root}: cannot read {rel[:200]!r} ({e.strerror}); re-copy the bundle") from e

    def _verify_file(self, rel: str, entry: FileEntry) -> None:
        path = self.path(rel)
        if not path.is_file():
            raise BundleError(f"{self.root}: {rel} is missing (listed in the manifest); re-export or re-copy the bundle")
        size = path.stat().st_size
        if size != entry.size:
            raise BundleError(
                f"{self.root}: {rel} is {size} bytes, the manifest says {entry.size}: "
                "the file is truncated or was changed; re-copy the bundle"
            )
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise BundleError(
                f"{self.root}: {rel} has sha256 {digest[:12]}…, the manifest says "
                f"{entry.sha256[:12]}…: the file was changed; re-copy the bundle"
            )

    def path(self, rel: str) -> Path:
        try:
            p = (self.root / rel).resolve()
        except (ValueError, OSError) as e:  # a NUL in the name, a symlink loop
            raise BundleError(f"{self.root}: file name {rel[:200]!r} is not a usable path ({e})") from e
        if self.root.resolve() not in p.parents:
            raise BundleError(f"{self.root}: file name {rel[:200]!r} points outside the bundle")
        return p

    def model_path(self, precision: Precision = "fp32") -> Path:
        rel = self.manifest.models.get(precision)
        if rel is None:
            have = ", ".join(self.manifest.models) or "none"
            raise BundleError(f"{self.root}: no {precision} model in this bundle (it has: {have})")
        return self.path(rel)

    def variant_path(self, key: str) -> Path:
        """The file of variant ``key`` (e.g. ``litert-int8``)."""
        variant = self.manifest.variants.get(key)
        if variant is None:
            have = ", ".join(self.manifest.variants) or "none: it holds its ONNX models only"
            raise BundleError(f"{self.root}: no {key} variant in this bundle (it has: {have}); "
                              f"export it with `tandem export RUN --formats onnx,{key.partition('-')[0]}`")
        return self.path(variant.file)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.manifest.files.values())


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file under ``root`` into ``manifest.files`` and write manifest.json atomically."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in UNHASHED or path.name.startswith("."):
            continue
        files[rel] = file_entry(path)
    manifest = manifest.model_copy(update={"files": files})
    atomic.write_text(root / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def editing(bundle: Bundle) -> Iterator[Path]:
    """A staged copy of ``bundle`` to change; it replaces the bundle only if the block succeeds.

    Files are hard-linked where possible, so writers must replace files (atomic.write_*), never
    modify them in place. Call :func:`write_manifest` on the staged folder before leaving.
    """
    with atomic.staged_dir(bundle.root) as stage:
        for rel in bundle.manifest.files:
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(bundle.path(rel), dst)
            except OSError:
                shutil.copy2(bundle.path(rel), dst)
        yield stage
