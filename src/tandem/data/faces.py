"""A catalog's faces as aligned crops: the face box (where the catalog says faces are, else the
detector's largest face), its five landmarks, and the canonical crop (tandem.faces.align).

LFW's funnelled images put every face in the same place: the Haar detector's box lies at
(67, 67, 183, 183) of the 250×250 image (median over 300 random images; interquartile range 6 px),
and landmarks found from that fixed box differ from those found from the detector's own box by 2%
of the eye distance (median). So LFW images skip the detector, which is most of the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tandem.bundle.preprocess import decode_image
from tandem.data.catalog import ImageCatalog
from tandem.errors import DataError, ImageError
from tandem.faces.align import AlignSpec, Landmarker, aligned_crop, landmark_input, points_in_image
from tandem.faces.finder import FaceFinder

log = logging.getLogger(__name__)

# Where faces lie in LFW's funnelled images, as fractions (x0, y0, x1, y1): see the module docstring.
LFW_FACE_BOX = (67 / 250, 67 / 250, 183 / 250, 183 / 250)
BATCH = 256


@dataclass
class AlignedFaces:
    pixels: np.ndarray  # N×H×W×3 uint8 canonical crops
    labels: np.ndarray  # N
    kept: list[int]  # indices into the catalog's records
    points: np.ndarray  # N×5×2 landmarks in image coordinates
    face_probability: np.ndarray  # N


def face_box(catalog: ImageCatalog) -> tuple[float, float, float, float] | None:
    """The catalog's fixed face box (fractions), or None when faces must be found."""
    return LFW_FACE_BOX if catalog.source == "lfw" else None


def _find(img: Image.Image, fixed: tuple[float, float, float, float] | None,
          finder: FaceFinder | None) -> tuple[float, float, float, float] | None:
    if fixed is not None:
        x0, y0, x1, y1 = fixed
        return x0 * img.width, y0 * img.height, x1 * img.width, y1 * img.height
    assert finder is not None
    faces = finder.find(img)
    if not faces:
        return None
    f = faces[0]
    return f.x, f.y, f.x + f.w, f.y + f.h


def align_catalog(catalog: ImageCatalog, spec: AlignSpec, landmarker: Landmarker,
                  progress: Callable[[int], None] | None = None, threads: int = 2,
                  box_of: Callable[[Image.Image], tuple[float, float, float, float]] | None = None,
                  min_face_probability: float = 0.0, skipped: dict[str, int] | None = None) -> AlignedFaces:
    """Every readable image with a face, aligned. Unreadable images and images without a face are
    skipped, counted in ``catalog.notes`` (with ``skipped``: only added to it, by reason, for a caller
    that aligns several parts of one dataset to report them once, report_skipped_faces). ``box_of(image)`` (pixels) replaces the detector; LFW's
    own box is used for LFW catalogs. Faces the landmark network scores below
    ``min_face_probability`` count as not found."""
    if not catalog.records:
        raise DataError(f"{catalog.root}: no images to read")
    fixed = face_box(catalog)
    finders: dict[int, FaceFinder] = {}

    def load(i: int) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]] | str:
        import threading

        try:
            img = decode_image(catalog.records[i].path)
        except ImageError as e:
            return f"unreadable: {e}"
        finder = None
        if box_of is not None:
            box: tuple[float, float, float, float] | None = box_of(img)
        else:
            if fixed is None:
                finder = finders.setdefault(threading.get_ident(), FaceFinder())
            box = _find(img, fixed, finder)
        if box is None:
            return "no face found"
        pixels, square = landmark_input(img, box)
        return img, pixels, square

    crops: list[np.ndarray] = []
    points: list[np.ndarray] = []
    probs: list[float] = []
    kept: list[int] = []
    counts: dict[str, int] = {}
    order = list(range(len(catalog.records)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(order), BATCH):
            part = order[start : start + BATCH]
            loaded = list(pool.map(load, part))
            ok = [(i, r) for i, r in zip(part, loaded, strict=True) if not isinstance(r, str)]
            for r in loaded:
                if isinstance(r, str):
                    reason = r.split(":")[0]
                    counts[reason] = counts.get(reason, 0) + 1
            if ok:
                lm, prob = landmarker.find_many(np.stack([r[1] for _, r in ok]))
                faint = prob < min_face_probability
                if faint.any():
                    counts["no face found"] = counts.get("no face found", 0) + int(faint.sum())
                    ok = [item for item, f in zip(ok, faint, strict=True) if not f]
                    lm, prob = lm[~faint], prob[~faint]
                jobs = [(r[0], points_in_image(lm[k], r[2])) for k, (_, r) in enumerate(ok)]
                for k, c in enumerate(pool.map(lambda job: aligned_crop(job[0], job[1], spec)[0], jobs)):
                    crops.append(c)
                    points.append(jobs[k][1])
                    probs.append(float(prob[k]))
                    kept.append(ok[k][0])
            if progress:
                progress(len(part))
    if skipped is not None:
        for reason, n in counts.items():
            skipped[reason] = skipped.get(reason, 0) + n
    else:
        catalog.notes.extend(report_skipped_faces(catalog.root, counts, len(order)))
    if not kept:
        raise DataError(f"{catalog.root}: no face found in any of the {len(order)} images")
    labels = np.array([catalog.records[i].label for i in kept], dtype=np.int64)
    return AlignedFaces(np.stack(crops), labels, kept, np.stack(points), np.array(probs, np.float32))


def report_skipped_faces(root: object, skipped: dict[str, int], total: int, parts: str = "") -> list[str]:
    """Log the images skipped among ``total`` (read for ``parts``), once per reason; the notes for the run's records."""
    notes = []
    of = f"{total} ({parts})" if parts else str(total)
    for reason, n in sorted(skipped.items()):
        log.warning("%s: skipped %d image(s) of %s: %s", root, n, of, reason)
        notes.append(f"skipped {n} image(s) of {of}: {reason}")
    return notes
