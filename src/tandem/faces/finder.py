"""Find a face in an arbitrary photo and turn it into the crop window the model was trained on.

OpenCV's bundled Haar cascade finds the face (web/src/face.js repeats it); the crop window relative to the Haar box was
measured on 598 random LFW images (median over images of where scikit-learn's LFW crop lies
inside the detected box), so a face in any photo is cropped the way training faces were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from tandem.errors import ModelError

CASCADE = "haarcascade_frontalface_default.xml"
# (x0, y0, x1, y1) of the training crop, in units of the detected box's width/height from its corner.
HAAR_TO_CROP = (0.092, 0.026, 0.905, 1.105)
DETECT_MAX_SIDE = 640


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    w: int
    h: int

    def crop_window(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = HAAR_TO_CROP
        return (
            round(self.x + x0 * self.w), round(self.y + y0 * self.h),
            round(self.x + x1 * self.w), round(self.y + y1 * self.h),
        )


class FaceFinder:
    def __init__(self) -> None:
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)  # type: ignore[attr-defined]
        if self._cascade.empty():
            raise ModelError(f"OpenCV's {CASCADE} did not load; reinstall opencv-python-headless<5 (5.x dropped it)")

    def find(self, img: Image.Image) -> list[FaceBox]:
        """Faces, largest first."""
        scale = min(1.0, DETECT_MAX_SIDE / max(img.width, img.height))
        small = img if scale == 1.0 else img.resize((round(img.width * scale), round(img.height * scale)))
        gray = cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY)
        side = max(24, int(0.12 * min(gray.shape)))
        # The photo as it is first, then with its histogram equalised. Equalising a whole photo
        # helps a dark or flat one, but where a large plain background dominates the histogram it
        # flattens the face: measured on 150 LFW faces pasted into 2400×1800 plain canvases,
        # equalised missed 13, as is 0; on the same faces darkened to 30%, as is missed 8,
        # equalised 2. Both passes: 0 and 2. Then, only if still nothing, the photo turned by 20°
        # each way: the cascade wants an upright face, a selfie is often tilted (measured on 120 LFW
        # faces tilted 20° in larger photos: 28 missed upright only, 1 with the turned passes).
        h, w = gray.shape
        for sign in (0, 1, -1):
            view = gray if sign == 0 else turned(gray, sign)
            for equalise in (False, True):
                found = self._cascade.detectMultiScale(cv2.equalizeHist(view) if equalise else view,
                                                       scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
                if len(found):
                    boxes = [_upright(box, sign, w, h) for box in found]
                    faces = [FaceBox(*(round(v / scale) for v in box)) for box in boxes]
                    return sorted(faces, key=lambda b: b.w * b.h, reverse=True)
        return []


# cos and sin of 20°, written out so that the browser (web/src/face.js) uses the very same numbers.
TILT_COS, TILT_SIN = 0.9396926207859084, 0.3420201433256687


def turned(gray: np.ndarray, sign: int) -> np.ndarray:
    """``gray`` turned by 20° (``sign`` ±1) about its centre, the same size, each pixel the nearest
    input pixel (black outside): arithmetic the browser repeats exactly, where OpenCV's own warps
    differ between builds."""
    h, w = gray.shape
    cx, cy, s = w / 2, h / 2, sign * TILT_SIN
    du, dv = np.meshgrid(np.arange(w) + 0.5 - cx, np.arange(h) + 0.5 - cy)
    x = np.floor(TILT_COS * du - s * dv + cx).astype(np.int64)
    y = np.floor(s * du + TILT_COS * dv + cy).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = np.zeros_like(gray)
    out[inside] = gray[y[inside], x[inside]]
    return out


def _upright(box: Sequence[int], sign: int, w: int, h: int) -> tuple[float, float, float, float]:
    """A box found in the ``turned`` view, as (x, y, w, h) in the photo: its centre mapped back, its
    size kept (the landmark network then finds the tilted face's points, and alignment turns it)."""
    x, y, bw, bh = (float(v) for v in box)
    if sign == 0:
        return x, y, bw, bh
    cx, cy, s = w / 2, h / 2, sign * TILT_SIN
    du, dv = x + bw / 2 - cx, y + bh / 2 - cy
    ox, oy = TILT_COS * du - s * dv + cx, s * du + TILT_COS * dv + cy
    return ox - bw / 2, oy - bh / 2, bw, bh
