"""The slow teacher effects a deep-art network learns to imitate (issue 18), and how close it comes.

Each teacher is one of OpenCV's non-photorealistic rendering operators (Gastal and Oliveira's domain
transform filters), run on RGB uint8 pixels at its default parameters, or the brute-force bilateral
filter (`smooth`: 25×25 taps a pixel, the slow operator fast approximations such as the bilateral grid
and HDRnet were made to replace), written down here so a bundle can say exactly what it imitates. They are edge-aware filters whose support spans tens of pixels, so a
teacher runs on the whole photo and training crops are taken from its output afterwards.

PSNR and SSIM (Wang et al. 2004: 11×11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) compare a
student's pixels with its teacher's on a 0..255 scale, averaged over the three channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from tandem.errors import ConfigError


@dataclass(frozen=True)
class Effect:
    name: str
    teacher: str  # the OpenCV call, parameters included
    summary: str
    apply_bgr: Callable[[np.ndarray], np.ndarray]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The teacher's picture for one HxWx3 uint8 RGB photo."""
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return np.ascontiguousarray(self.apply_bgr(bgr)[:, :, ::-1])


EFFECTS: dict[str, Effect] = {e.name: e for e in (
    Effect("stylization", "cv2.stylization(sigma_s=60, sigma_r=0.45)", "a flat-shaded, painted look",
           lambda bgr: cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)),
    Effect("pencil", "cv2.pencilSketch(sigma_s=60, sigma_r=0.07, shade_factor=0.02)[1]", "a colour pencil sketch",
           lambda bgr: cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.02)[1]),
    Effect("detail", "cv2.detailEnhance(sigma_s=10, sigma_r=0.15)", "local detail enhanced",
           lambda bgr: cv2.detailEnhance(bgr, sigma_s=10, sigma_r=0.15)),
    Effect("edge-preserving", "cv2.edgePreservingFilter(flags=1, sigma_s=60, sigma_r=0.4)",
           "smoothed, edges kept (a skin-smoothing look)",
           lambda bgr: cv2.edgePreservingFilter(bgr, flags=1, sigma_s=60, sigma_r=0.4)),
    Effect("smooth", "cv2.bilateralFilter(d=25, sigmaColor=130, sigmaSpace=25)",
           "skin smoothed by a wide bilateral filter, edges kept",
           lambda bgr: cv2.bilateralFilter(bgr, 25, 130, 25)),
)}


def effect(name: str) -> Effect:
    found = EFFECTS.get(name)
    if found is None:
        raise ConfigError(f"unknown --teacher-effect {name!r}: use {', '.join(EFFECTS)}")
    return found


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8-range images (or stacks of them), 0..255 scale;
    capped at 100 dB for identical images."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two HxWx3 images (or NxHxWx3 stacks), 0..255 scale."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.ndim == 4:
        return float(np.mean([ssim(x, y) for x, y in zip(a64, b64, strict=True)]))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a64), blur(b64)
    var_a = blur(a64 * a64) - mu_a**2
    var_b = blur(b64 * b64) - mu_b**2
    cov = blur(a64 * b64) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())
