"""Face alignment: five landmarks → a similarity transform → the canonical crop the network was
trained on. The same arithmetic runs in the browser (web/src/align.js); docs/bundle.md states it.

Steps, each chosen so that every runtime can repeat it bit for bit:
1. the face box (from the detector) becomes an integer square around its centre, cropped (black
   outside the image) and resized to 48×48 with Pillow's bilinear filter;
2. the landmark network (MTCNN's O-Net, ``landmarks.onnx`` in the bundle) gives five points;
3. the least-squares similarity transform (rotation, uniform scale, shift; Umeyama 1991) maps
   them onto the template's points;
4. when that transform shrinks the face, the region the crop needs is first resized with Pillow's
   bilinear filter (which averages, where point sampling would alias) so the warp scales by ~1;
5. the crop is sampled bilinearly at each output pixel's centre, edges repeated, rounded half up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tandem.errors import ImageError

LANDMARK_SIZE = 48
POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# ArcFace's template for a 112×112 crop (x, y), from the InsightFace repository: the places of the
# five landmarks on a canonical face, with pixel centres at +0.5 (our coordinates are continuous).
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])


@dataclass(frozen=True)
class AlignSpec:
    """The crop: ``height``×``width`` pixels, the template's points scaled to it (``template``)."""

    height: int
    width: int
    template: tuple[tuple[float, float], ...]

    @classmethod
    def square(cls, size: int, zoom: float = 1.0) -> AlignSpec:
        """ArcFace's template scaled to ``size``; ``zoom`` < 1 shows more around the face."""
        c = 56.0
        pts = (TEMPLATE_112 - c) * zoom * size / 112 + size / 2
        return cls(size, size, tuple((round(float(x), 4), round(float(y), 4)) for x, y in pts))

    def points(self) -> np.ndarray:
        return np.array(self.template, dtype=np.float64)

    def to_json(self) -> dict:
        return {"height": self.height, "width": self.width, "template": [list(p) for p in self.template],
                "landmarks": list(POINTS), "landmark_size": LANDMARK_SIZE}

    @classmethod
    def from_json(cls, d: dict) -> AlignSpec:
        return cls(int(d["height"]), int(d["width"]), tuple((float(x), float(y)) for x, y in d["template"]))


def landmark_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The integer square (x0, y0, x1, y1) around a face box's centre that the landmark network sees."""
    x0, y0, x1, y1 = box
    side = max(1, math.floor(max(x1 - x0, y1 - y0) + 0.5))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    sx, sy = math.floor(cx - side / 2 + 0.5), math.floor(cy - side / 2 + 0.5)
    return sx, sy, sx + side, sy + side


def landmark_input(img: Image.Image, box: tuple[float, float, float, float]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """48×48×3 uint8 pixels for the landmark network, and the square they came from."""
    sq = landmark_box(box)
    pixels = np.asarray(img.crop(sq).resize((LANDMARK_SIZE, LANDMARK_SIZE), Image.Resampling.BILINEAR), np.uint8)
    return pixels, sq


def points_in_image(landmarks: np.ndarray, square: tuple[int, int, int, int]) -> np.ndarray:
    """The network's 10 outputs (x1..x5, y1..y5, fractions of the square) as 5×2 image coordinates."""
    x0, y0, x1, _ = square
    side = x1 - x0
    lm = np.asarray(landmarks, np.float64).reshape(10)
    return np.stack([x0 + lm[:5] * side, y0 + lm[5:] * side], axis=1)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 matrix M of the rotation + uniform scale + shift that best maps ``src`` onto ``dst``
    (least squares; no reflection): dst ≈ M @ [x, y, 1]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    sm, dm = src.mean(0), dst.mean(0)
    s, d = src - sm, dst - dm
    norm = float((s * s).sum())
    if norm < 1e-9:
        raise ImageError("the face's landmarks coincide; the face is too small or not a face")
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    tx = dm[0] - (a * sm[0] - b * sm[1])
    ty = dm[1] - (b * sm[0] + a * sm[1])
    return np.array([[a, -b, tx], [b, a, ty]])


def _invert(m: np.ndarray) -> np.ndarray:
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    inv = np.array([[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]]) / det
    return np.concatenate([inv, -(inv @ m[:, 2])[:, None]], axis=1)


def warp(pixels: np.ndarray, m: np.ndarray, height: int, width: int) -> np.ndarray:
    """Output pixel (u, v) takes the bilinear sample of ``pixels`` (H×W×3 uint8) at M⁻¹(u+½, v+½),
    edges repeated, rounded half up."""
    inv = _invert(m)
    h, w = pixels.shape[:2]
    u = np.arange(width, dtype=np.float64) + 0.5
    v = np.arange(height, dtype=np.float64) + 0.5
    uu, vv = np.meshgrid(u, v)
    # Continuous source point, then index space (pixel centres at integers).
    sx = inv[0, 0] * uu + inv[0, 1] * vv + inv[0, 2] - 0.5
    sy = inv[1, 0] * uu + inv[1, 1] * vv + inv[1, 2] - 0.5
    sx = np.minimum(np.maximum(sx, 0.0), w - 1.0)
    sy = np.minimum(np.maximum(sy, 0.0), h - 1.0)
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
    x1i, y1i = np.minimum(x0i + 1, w - 1), np.minimum(y0i + 1, h - 1)
    p = pixels.astype(np.float64)
    top = p[y0i, x0i] * (1.0 - fx) + p[y0i, x1i] * fx
    bottom = p[y1i, x0i] * (1.0 - fx) + p[y1i, x1i] * fx
    out = top * (1.0 - fy) + bottom * fy
    return np.minimum(np.floor(out + 0.5), 255.0).astype(np.uint8)


def aligned_crop(img: Image.Image, points: np.ndarray, spec: AlignSpec) -> tuple[np.ndarray, np.ndarray]:
    """The canonical crop (H×W×3 uint8) of the face whose five landmarks are ``points`` (image
    coordinates), and the transform used (2×3, image → crop)."""
    m = similarity(points, spec.points())
    scale = math.hypot(m[0, 0], m[1, 0])
    if scale >= 1.0:
        return warp(np.asarray(img, np.uint8), m, spec.height, spec.width), m
    # Shrinking: resize the region the crop reads (its corners' preimage, plus a pixel) first.
    inv = _invert(m)
    corners = np.array([[0, 0, 1], [spec.width, 0, 1], [0, spec.height, 1], [spec.width, spec.height, 1]], float)
    pre = corners @ inv.T
    rx0 = max(0, math.floor(pre[:, 0].min()) - 1)
    ry0 = max(0, math.floor(pre[:, 1].min()) - 1)
    rx1 = min(img.width, math.ceil(pre[:, 0].max()) + 1)
    ry1 = min(img.height, math.ceil(pre[:, 1].max()) + 1)
    if rx1 - rx0 < 2 or ry1 - ry0 < 2:
        raise ImageError("the face lies outside the photo; use a photo where the whole face is visible")
    nw = max(2, math.floor((rx1 - rx0) * scale + 0.5))
    nh = max(2, math.floor((ry1 - ry0) * scale + 0.5))
    region = np.asarray(img.crop((rx0, ry0, rx1, ry1)).resize((nw, nh), Image.Resampling.BILINEAR), np.uint8)
    sx, sy = nw / (rx1 - rx0), nh / (ry1 - ry0)
    # Region pixels r relate to image pixels p by r = S (p − origin); the crop is M p = M S⁻¹ r + M origin.
    m2 = np.array([[m[0, 0] / sx, m[0, 1] / sy, m[0, 0] * rx0 + m[0, 1] * ry0 + m[0, 2]],
                   [m[1, 0] / sx, m[1, 1] / sy, m[1, 0] * rx0 + m[1, 1] * ry0 + m[1, 2]]])
    return warp(region, m2, spec.height, spec.width), m


class Landmarker:
    """``landmarks.onnx`` with ONNX Runtime: five points for a face box."""

    def __init__(self, source: Path | bytes, threads: int | None = 1) -> None:
        from tandem.bundle.runtime import load_session

        self.session = load_session(source, threads)

    def find(self, img: Image.Image, box: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
        """(5×2 points in image coordinates, face probability) for the face in ``box`` (x0, y0, x1, y1)."""
        pixels, square = landmark_input(img, box)
        landmarks, prob = self.session.run(["landmarks", "face_probability"], {"pixels": pixels[None]})[:2]
        return points_in_image(landmarks[0], square), float(prob[0])

    def find_many(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N×10) and probabilities (N) for N landmark inputs (N×48×48×3)."""
        out = self.session.run(["landmarks", "face_probability"], {"pixels": np.ascontiguousarray(pixels)})
        return out[0], out[1]


def region_boxes(spec: AlignSpec) -> dict[str, tuple[float, float, float, float]]:
    """Eyes, nose and mouth as fractions (x0, y0, x1, y1) of the aligned crop, measured from the
    template's landmarks in units of the eye distance: on an aligned face the landmarks sit on the
    template, so these boxes follow each face's own features."""
    p = spec.points()
    le, re, nose, ml, mr = p
    iod = float(np.linalg.norm(re - le))
    eye_y = (le[1] + re[1]) / 2
    mouth_y = (ml[1] + mr[1]) / 2
    boxes = {
        "eyes": (le[0] - 0.55 * iod, eye_y - 0.45 * iod, re[0] + 0.55 * iod, eye_y + 0.35 * iod),
        "nose": (nose[0] - 0.4 * iod, eye_y + 0.05 * iod, nose[0] + 0.4 * iod, nose[1] + 0.3 * iod),
        "mouth": (ml[0] - 0.3 * iod, mouth_y - 0.35 * iod, mr[0] + 0.3 * iod, mouth_y + 0.4 * iod),
    }
    w, h = spec.width, spec.height
    return {k: (round(max(0.0, x0 / w), 4), round(max(0.0, y0 / h), 4), round(min(1.0, x1 / w), 4),
                round(min(1.0, y1 / h), 4)) for k, (x0, y0, x1, y1) in boxes.items()}


def region_views(pixels: np.ndarray, regions: dict[str, tuple[float, float, float, float]],
                 fill: np.ndarray) -> dict[str, np.ndarray]:
    """The whole face and one copy per region, everything else in ``fill`` (the network's mean
    colour, which its normalisation turns into zeros). Rows and columns: round half to even of the
    fraction times the size, as Python's round() does (the browser repeats it)."""
    h, w = pixels.shape[1:3]
    views = {"face": pixels}
    for name, (x0, y0, x1, y1) in regions.items():
        masked = np.empty_like(pixels)
        masked[:] = fill
        r0, r1, c0, c1 = round(y0 * h), round(y1 * h), round(x0 * w), round(x1 * w)
        masked[:, r0:r1, c0:c1] = pixels[:, r0:r1, c0:c1]
        views[name] = masked
    return views
