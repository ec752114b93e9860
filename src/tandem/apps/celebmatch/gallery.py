"""The enrolled identities: one unit-length mean embedding per identity and face region."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tandem import atomic
from tandem.apps.celebmatch.kit import MIN_FACE_PROBABILITY, FaceKit
from tandem.apps.celebmatch.search import EXACT_UP_TO, Searcher, build_index
from tandem.bundle import Bundle, editing, write_manifest
from tandem.bundle.preprocess import PreprocessSpec, decode_image, to_input
from tandem.bundle.runtime import OnnxModel
from tandem.data.catalog import ImageCatalog
from tandem.errors import BundleError, DataError, ImageError
from tandem.faces.align import region_views as faces_region_views

log = logging.getLogger(__name__)

APP = "celebmatch"
GALLERY_FILE = "gallery.npz"
# Regions of the model's input, as fractions (x0, y0, x1, y1), read off aligned LFW crops.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "eyes": (0.0, 0.22, 1.0, 0.46),
    "nose": (0.27, 0.38, 0.73, 0.66),
    "mouth": (0.17, 0.60, 0.83, 0.84),
}
VIEWS = ("face", *REGIONS)


def region_views(pixels: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """The whole face, and one copy per region with everything else set to the training mean
    colour (which the graph's normalisation turns into zeros)."""
    fill = np.round(np.array(spec.normalize_in_graph.mean) * 255).astype(np.uint8)
    return faces_region_views(pixels, REGIONS, fill)


def embed_views(model: OnnxModel, pixels: np.ndarray) -> dict[str, np.ndarray]:
    return {name: model.run(v)["embedding"] for name, v in region_views(pixels, model.spec).items()}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


@dataclass
class Gallery:
    """``vectors[view]``: one unit row per identity, measured from ``centers[view]``. A classifier's
    embedding (schema-1 bundles) is centred on the mean over identities: its masked regions all look
    alike, and uncentred every eyes match scored 90–99%. A face-embedding bundle's network learned
    regions and is calibrated as it is: its centres are zero. ``threshold``: the face similarity
    below which the best match is "no close match" (face-embedding bundles; None before)."""

    names: list[str]
    counts: np.ndarray
    vectors: dict[str, np.ndarray]
    centers: dict[str, np.ndarray]
    threshold: float | None = None
    # Serialized approximate-search indexes per view (search.py), for galleries above EXACT_UP_TO.
    indexes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._searchers: dict[str, Searcher] = {}

    def top(self, view: str, embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(identity indices, similarities) of the ``k`` best identities for one embedding, best first."""
        searcher = self._searchers.get(view)
        if searcher is None:
            searcher = self._searchers[view] = Searcher(self.vectors[view], self.indexes.get(view))
        return searcher.top(_unit(np.asarray(embedding, np.float64).reshape(-1) - self.centers[view]), k)

    def with_indexes(self, above: int = EXACT_UP_TO) -> Gallery:
        """This gallery with an approximate-search index per view when it holds more than ``above`` identities."""
        if len(self.names) <= above:
            return self
        return Gallery(self.names, self.counts, self.vectors, self.centers, self.threshold,
                       {v: build_index(vec) for v, vec in self.vectors.items()})

    def query(self, view: str, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity of each embedding (rows) with each identity (columns)."""
        return _unit(embeddings - self.centers[view]) @ self.vectors[view].T

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        extra: dict[str, np.ndarray] = {} if self.threshold is None else {"threshold": np.array(self.threshold, np.float64)}
        extra.update({f"index_{k}": v for k, v in self.indexes.items()})
        # allow_pickle=False, as load() reads it (stated, it also tells mypy that no array lands on it).
        np.savez(buf, allow_pickle=False, names=np.array(self.names, dtype=str), counts=self.counts,
                 **{f"view_{k}": v.astype(np.float32) for k, v in self.vectors.items()},
                 **{f"center_{k}": v.astype(np.float32) for k, v in self.centers.items()}, **extra)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> Gallery:
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [str(s) for s in z["names"]]
                vectors = {k: z[f"view_{k}"] for k in VIEWS}
                centers = {k: z[f"center_{k}"] for k in VIEWS}
                counts = z["counts"]
                threshold = float(z["threshold"]) if "threshold" in z.files else None
                indexes = {k: z[f"index_{k}"] for k in VIEWS if f"index_{k}" in z.files}
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{path}: unreadable celebmatch gallery ({e}); enrol again") from e
        return cls(names, counts, vectors, centers, threshold, indexes)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Gallery:
        app = bundle.manifest.apps.get(APP)
        if not app:
            raise BundleError(
                f"{bundle.root}: no celebmatch gallery in this bundle; run "
                f"`tandem celebmatch enroll {bundle.root} --data lfw` first"
            )
        rel = app.get("gallery", "")
        if rel not in bundle.manifest.files:
            raise BundleError(f"{bundle.root}: the celebmatch gallery {rel!r} is not listed in the manifest's files; enrol again")
        return cls.load(bundle.path(rel))


def build_gallery(
    model: OnnxModel,
    catalog: ImageCatalog,
    boxes: Callable[[object], tuple[int, int, int, int] | None] | None = None,
    max_per_identity: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Gallery:
    """Mean embedding per class of ``catalog`` (the catalog's crop, or ``boxes(image)`` if given)."""
    dim = next(o.shape[1] for o in model.session.get_outputs() if o.name == "embedding")
    sums = {v: np.zeros((len(catalog.classes), dim), np.float64) for v in VIEWS}
    counts = np.zeros(len(catalog.classes), np.int64)
    spec = model.spec.model_copy(update={"crop": catalog.crop})
    per_class: dict[int, list[Path]] = {}
    for r in catalog.records:
        per_class.setdefault(r.label, []).append(r.path)
    skipped = 0
    for label, paths in sorted(per_class.items()):
        pixels = []
        for p in paths[:max_per_identity]:
            try:
                img = decode_image(p)
                box = boxes(img) if boxes else None
                if boxes and box is None:
                    skipped += 1
                    continue
                pixels.append(to_input(img, spec, box))
            except ImageError as e:
                log.warning("skipping %s", e)
                skipped += 1
        if progress:
            progress(1)
        if not pixels:
            continue
        views = embed_views(model, np.stack(pixels))
        for v in VIEWS:
            sums[v][label] = _unit(views[v]).sum(0)
        counts[label] = len(pixels)
    if skipped:
        log.warning("enrolment skipped %d image(s) (unreadable or no face found)", skipped)
    keep = np.flatnonzero(counts > 0)
    if len(keep) == 0:
        raise DataError(f"{catalog.root}: no usable image to enrol")
    means = {v: _unit(sums[v][keep]) for v in VIEWS}
    centers = {v: means[v].mean(0) for v in VIEWS}
    return Gallery([catalog.classes[i] for i in keep], counts[keep],
                   {v: _unit(means[v] - centers[v]).astype(np.float32) for v in VIEWS},
                   {v: centers[v].astype(np.float32) for v in VIEWS})


def build_face_gallery(model: OnnxModel, kit: FaceKit, catalog: ImageCatalog, max_per_identity: int | None = None,
                       progress: Callable[[int], None] | None = None, detect: bool = True,
                       ann_above: int = EXACT_UP_TO) -> Gallery:
    """A face-embedding bundle's gallery: every photo aligned (landmarks → canonical crop), the
    mean embedding per identity and view, and the no-match threshold for this very gallery."""
    from tandem.data.faces import align_catalog

    if max_per_identity is not None:
        seen: dict[int, int] = {}
        keep = []
        for i, r in enumerate(catalog.records):
            seen[r.label] = seen.get(r.label, 0) + 1
            if seen[r.label] <= max_per_identity:
                keep.append(i)
        catalog = catalog.subset(keep)
    spec = model.spec
    faces = align_catalog(catalog, kit.align, kit.landmarker, progress, min_face_probability=MIN_FACE_PROBABILITY,
                          box_of=None if detect else (lambda img: spec.crop_pixels(img.width, img.height)))
    views = {v: model.run(px)["embedding"] for v, px in kit.views(faces.pixels).items()}
    present = np.unique(faces.labels)
    means = {v: _unit(np.stack([_unit(e[faces.labels == c]).mean(0) for c in present])) for v, e in views.items()}
    names = [catalog.classes[i] for i in present]
    counts = np.array([int((faces.labels == c).sum()) for c in present], np.int64)
    dim = next(iter(means.values())).shape[1]
    threshold = kit.threshold(means["face"], names)
    return Gallery(names, counts, {v: m.astype(np.float32) for v, m in means.items()},
                   {v: np.zeros(dim, np.float32) for v in means},
                   None if np.isnan(threshold) else threshold).with_indexes(ann_above)


def enroll(bundle: Bundle, gallery: Gallery, source: str) -> Bundle:
    """Store ``gallery`` in the bundle (replacing any earlier one) and re-hash the manifest."""
    manifest = bundle.manifest.model_copy(deep=True)
    faces = bundle.manifest.apps.get("faces")
    regions = faces["regions"] if faces else {k: list(v) for k, v in REGIONS.items()}
    manifest.apps[APP] = {
        "gallery": GALLERY_FILE, "identities": len(gallery.names), "images": int(gallery.counts.sum()),
        "source": source, "regions": regions, "precision": "fp32",
    }
    if gallery.threshold is not None:
        manifest.apps[APP]["threshold"] = gallery.threshold
    with editing(bundle) as stage:
        atomic.write_bytes(stage / GALLERY_FILE, gallery.to_bytes())
        write_manifest(stage, manifest)
    return Bundle.load(bundle.root)
