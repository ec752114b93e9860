"""Match a photo against the enrolled gallery: overall top-k, plus the best match per region."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tandem.apps.celebmatch.gallery import REGIONS, Gallery, region_views
from tandem.apps.celebmatch.kit import FaceKit
from tandem.bundle import Bundle, Precision
from tandem.bundle.preprocess import decode_image, to_input
from tandem.bundle.runtime import OnnxModel
from tandem.errors import NoFaceDetected
from tandem.faces.finder import FaceFinder


def display_name(label: str) -> str:
    return label.replace("_", " ")


def percent(similarity: float) -> int:
    """Cosine similarity shown as a percentage; opposite directions read as 0%."""
    return round(max(0.0, similarity) * 100)


@dataclass(frozen=True)
class Likeness:
    name: str
    similarity: float
    # The calibrated chance (in %) that the faces are the same person; schema-1 bundles: the cosine.
    percent: int = -1

    def __post_init__(self) -> None:
        if self.percent < 0:
            object.__setattr__(self, "percent", percent(self.similarity))


@dataclass(frozen=True)
class MatchResult:
    top: list[Likeness]
    parts: dict[str, Likeness]
    face_box: tuple[int, int, int, int] | None
    crop_window: tuple[int, int, int, int]
    no_match: bool = False
    landmarks: list[list[float]] | None = None

    @property
    def sentence(self) -> str:
        best = self.top[0]
        if self.no_match:
            return f"No close match — the nearest is {display_name(best.name)} ({best.percent}%)"
        head = f"You look {best.percent}% like {display_name(best.name)}"
        others = [(part, lk) for part, lk in self.parts.items() if lk.name != best.name]
        if not others:
            return f"{head} — {', '.join(self.parts)} included."
        part, lk = max(others, key=lambda item: item[1].similarity)
        return f"{head} — but you have {display_name(lk.name)}'s {part} ({lk.percent}%)"

    def to_json(self) -> dict:
        return {
            "sentence": self.sentence,
            "top": [{**asdict(t), "name": display_name(t.name), "label": t.name, "percent": t.percent} for t in self.top],
            "parts": {k: {**asdict(v), "name": display_name(v.name), "label": v.name, "percent": v.percent}
                      for k, v in self.parts.items()},
            "face_box": self.face_box,
            "crop_window": self.crop_window,
            "no_match": self.no_match,
            "landmarks": self.landmarks,
        }


@dataclass(frozen=True)
class FacePixels:
    """A photo's face, cropped and resized for the model, and where it was found."""

    pixels: np.ndarray  # 1×H×W×3 uint8
    face_box: tuple[int, int, int, int] | None
    crop_window: tuple[int, int, int, int]
    landmarks: np.ndarray | None = None  # 5×2 (face-embedding bundles)


class CelebMatcher:
    """``match`` = ``face`` (decode, find, crop) + the model on every view + ``score``. The server
    runs the three steps apart, so that the model part goes through its batcher."""

    def __init__(self, bundle: Bundle, precision: Precision = "fp32", threads: int | None = None,
                 model: OnnxModel | None = None):
        self.bundle = bundle
        self.gallery = Gallery.from_bundle(bundle)
        self.model = model or OnnxModel.open(bundle, precision, threads)
        self.kit = FaceKit.of(bundle)
        regions = bundle.manifest.apps.get("faces", {}).get("regions") or REGIONS
        self.parts = list(regions)
        # OpenCV's cascade keeps scratch buffers: one finder per thread that calls ``face``.
        self._local = threading.local()

    def face(self, photo: bytes | Path | str | Image.Image, detect: bool = True) -> FacePixels:
        """``detect``: find the face first (any photo); without, crop as the training data was
        cropped (for aligned LFW-style images)."""
        img = photo if isinstance(photo, Image.Image) else decode_image(photo)
        face_box = None
        if detect:
            finder = getattr(self._local, "finder", None)
            if finder is None:
                finder = self._local.finder = FaceFinder()
            faces = finder.find(img)
            if not faces:
                # No way to skip the finder is named here: each surface names its own (with_skip).
                raise NoFaceDetected(
                    "no face found in the photo: use a well-lit, frontal photo where the face fills "
                    "at least an eighth of the picture"
                )
            f = faces[0]
            face_box = (f.x, f.y, f.x + f.w, f.y + f.h)
            window = f.crop_window()
        else:
            window = self.model.spec.crop_pixels(img.width, img.height)
        if self.kit is not None:
            aligned = self.kit.align_face(img, face_box or window)
            return FacePixels(aligned.pixels[None], face_box, aligned.window, aligned.landmarks)
        return FacePixels(to_input(img, self.model.spec, window)[None], face_box, window)

    def views(self, face: FacePixels) -> dict[str, np.ndarray]:
        """The rows the model runs on: the whole face, then each region."""
        if self.kit is not None:
            return self.kit.views(face.pixels)
        return region_views(face.pixels, self.model.spec)

    def score(self, face: FacePixels, views: dict[str, np.ndarray], top_k: int = 3) -> MatchResult:
        """The result from the embedding of each view (``embed_views`` of ``face.pixels``)."""
        g = self.gallery
        order, sims = g.top("face", views["face"][0], top_k)
        top = [self._likeness("face", g.names[i], float(v)) for i, v in zip(order, sims, strict=True)]
        parts = {}
        for part in self.parts:
            j, v = g.top(part, views[part][0], 1)
            parts[part] = self._likeness(part, g.names[int(j[0])], float(v[0]))
        no_match = g.threshold is not None and float(sims[0]) < g.threshold
        lm = None if face.landmarks is None else [[round(float(v), 2) for v in p] for p in face.landmarks]
        return MatchResult(top, parts, face.face_box, face.crop_window, no_match, lm)

    def _likeness(self, view: str, name: str, similarity: float) -> Likeness:
        if self.kit is None:
            return Likeness(name, similarity)
        return Likeness(name, similarity, self.kit.percent(view, similarity))

    def match(self, photo: bytes | Path | str | Image.Image, detect: bool = True, top_k: int = 3) -> MatchResult:
        face = self.face(photo, detect)
        views = self.views(face)
        out = self.model.run(np.concatenate(list(views.values())))["embedding"]
        return self.score(face, {v: out[i : i + 1] for i, v in enumerate(views)}, top_k)
