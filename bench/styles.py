"""Style pictures for the neural-style benchmark, drawn here: no painting can be downloaded on this
machine, and a drawn style says exactly what the network should pick up (its strokes and palette).

- ``swirl``: short thick strokes in a night-sky palette, turning around the centre (a Van Gogh-like
  texture);
- ``mosaic``: irregular tiles of saturated colour with dark grout (Voronoi cells).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def swirl(size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (30, 40, 90), np.uint8)
    palette = np.array([(250, 210, 40), (40, 90, 200), (20, 30, 80), (240, 240, 200), (60, 160, 220), (230, 120, 30)])
    for _ in range(size * size // 45):
        x, y = rng.integers(0, size, 2)
        angle = np.arctan2(y - size / 2, x - size / 2) + np.pi / 2 + rng.normal(0, 0.3)
        length = int(rng.integers(size // 40, size // 16))
        colour = tuple(int(v) for v in np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 15, 3), 0, 255))
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        cv2.line(img, (int(x), int(y)), end, colour, int(rng.integers(2, 5)), cv2.LINE_AA)
    return img


def mosaic(size: int = 256, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (size * size // 180, 2))
    palette = np.array([(200, 40, 40), (240, 190, 40), (40, 120, 200), (40, 160, 90), (235, 235, 220), (130, 60, 160)])
    colours = palette[rng.integers(len(palette), size=len(centres))] + rng.normal(0, 12, (len(centres), 3))
    yy, xx = np.mgrid[:size, :size]
    d = (xx[..., None] - centres[:, 0]) ** 2 + (yy[..., None] - centres[:, 1]) ** 2
    order = np.argsort(d, axis=-1)
    nearest, second = order[..., 0], order[..., 1]
    gap = np.sqrt(np.take_along_axis(d, second[..., None], -1)) - np.sqrt(np.take_along_axis(d, nearest[..., None], -1))
    img = np.clip(colours[nearest], 0, 255)
    img[gap[..., 0] < 1.6] = (35, 30, 30)  # the grout between tiles
    return img.astype(np.uint8)


STYLES: dict[str, Callable[[], np.ndarray]] = {"swirl": swirl, "mosaic": mosaic}


def write_style(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(STYLES[name]()).save(path)
    return path
