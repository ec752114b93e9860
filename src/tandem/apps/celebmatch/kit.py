"""What a face-embedding bundle brings for matching (its ``apps.faces`` entry, docs/bundle.md): the
landmark network and the alignment, the eyes/nose/mouth boxes, the calibration curves and the
impostor embeddings that set a gallery's "no close match" threshold. Older bundles (schema 1, a
classifier's embedding) have none of it and keep their fixed crop; ``FaceKit.of`` is None for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tandem.bundle import Bundle
from tandem.errors import BundleError, NoFaceFound
from tandem.faces.align import AlignSpec, Landmarker, aligned_crop, region_views
from tandem.faces.calibration import Calibration, no_match_threshold

APP = "faces"
# O-Net's face probability below which a box holds no face. Measured here: every one of 600 random
# LFW faces scored above 0.5 from its detector box; uniform noise scores near 0.
MIN_FACE_PROBABILITY = 0.5


def _box(values: list[float]) -> tuple[float, float, float, float]:
    """A region's (x0, y0, x1, y1) as fractions of the aligned face; ValueError unless four numbers."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


@dataclass(frozen=True)
class AlignedFace:
    pixels: np.ndarray  # H×W×3 uint8, the canonical crop
    landmarks: np.ndarray  # 5×2, image coordinates
    face_probability: float
    window: tuple[int, int, int, int]  # the image region the crop shows (bounding box, integers)


class FaceKit:
    def __init__(self, bundle: Bundle, spec: dict) -> None:
        try:
            self.align = AlignSpec.from_json(spec["align"])
            self.regions = {k: _box(box) for k, box in spec["regions"].items()}
            self.calibration = {k: Calibration.from_json(c) for k, c in spec.get("calibration", {}).items()}
            self.fill = np.array(spec["fill"], np.uint8)
            self.far = float(spec.get("far", 0.01))
            landmarks_file, impostors_file = spec["landmarks"], spec["impostors"]
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{bundle.root}: the manifest's apps.faces entry is incomplete ({e}); re-export the "
                              "bundle") from e
        for rel in (landmarks_file, impostors_file):
            if rel not in bundle.manifest.files:
                raise BundleError(f"{bundle.root}: apps.faces names {rel!r}, which the manifest does not list; "
                                  "re-export the bundle")
        self.landmarker = Landmarker(bundle.path(landmarks_file))
        self._impostors_path: Path = bundle.path(impostors_file)

    @classmethod
    def of(cls, bundle: Bundle) -> FaceKit | None:
        spec = bundle.manifest.apps.get(APP)
        return cls(bundle, spec) if spec else None

    def align_face(self, img: Image.Image, box: tuple[float, float, float, float]) -> AlignedFace:
        """The canonical crop of the face in ``box`` (x0, y0, x1, y1), or NoFaceFound when the
        landmark network sees no face there."""
        points, prob = self.landmarker.find(img, box)
        if not prob >= MIN_FACE_PROBABILITY:
            raise NoFaceFound(f"no face found in the photo (face probability {prob:.2f} where the face should be): "
                              "use a well-lit, frontal photo where the face fills at least an eighth of the picture")
        pixels, m = aligned_crop(img, points, self.align)
        return AlignedFace(pixels, points, prob, _window(m, self.align))

    def views(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return region_views(pixels, self.regions, self.fill)

    def percent(self, view: str, similarity: float) -> int:
        curve = self.calibration.get(view)
        p = float(curve.probability(similarity)) if curve else max(0.0, similarity)
        return round(100 * p)

    def threshold(self, gallery: np.ndarray, names: list[str]) -> float:
        """The no-match threshold for a gallery of these identity vectors (face view)."""
        with np.load(self._impostors_path, allow_pickle=False) as z:
            probes, probe_names = z["embeddings"].astype(np.float32), [str(n) for n in z["names"]]
        return no_match_threshold(probes, probe_names, gallery, names, self.far)


def _window(m: np.ndarray, spec: AlignSpec) -> tuple[int, int, int, int]:
    a, b = m[0, 0], m[1, 0]
    det = a * a + b * b
    inv = np.array([[a, b], [-b, a]]) / det
    corners = np.array([[0, 0], [spec.width, 0], [0, spec.height], [spec.width, spec.height]], float) - m[:, 2]
    pts = corners @ inv.T
    return (int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min())),
            int(np.ceil(pts[:, 0].max())), int(np.ceil(pts[:, 1].max())))
