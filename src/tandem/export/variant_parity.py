"""A variant's parity with the PyTorch model, measured by running the variant on real photos, and the bars it
must pass to be written (docs/bundle.md, "Variants"): the same for LiteRT and ExecuTorch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tandem.bundle import Parity, Variant
from tandem.effects import psnr
from tandem.errors import BundleError

# fp32 must match PyTorch as closely as ONNX must (exporter.py); int8 must pick the same class for 99% of
# the photos, or for as many as the int8 ONNX model does (a barely trained model has near ties).
FP32_MAX_ABS = 1e-4
INT8_AGREEMENT = 0.99
# An image-to-image model's fp32 variants (deep art): its float picture (0..255) within the bar its ONNX model
# must meet (stylize_export), and its rounded uint8 picture within one level (a value at .5 may round either way).
IMAGE_BARS_FLOAT = 1e-3
IMAGE_BARS_UINT8 = 1.0
# An image-to-image model's int8 variants have no top class to agree on: their 8-bit pictures must come within this
# PSNR (dB) of PyTorch's, the bar the int8 ONNX model of a neural style meets against fp32's (stylize_export).
INT8_PICTURE_DB = 30.0


@dataclass(frozen=True)
class ParityPhotos:
    """Real photos, PyTorch's outputs on them (in ``outputs`` order), and the int8 ONNX model's top-1
    agreement with PyTorch on them (the int8 bar)."""

    pixels: np.ndarray
    on: Literal["test", "train"]
    reference: list[np.ndarray]
    onnx_int8_agreement: float
    # The largest |difference| from PyTorch an fp32 variant may have, by output; None: FP32_MAX_ABS on every one.
    bars: dict[str, float] | None = None
    picture: str | None = None  # an image-to-image model's 8-bit picture output, whose PSNR is int8's bar


def measure(got: dict[str, np.ndarray], photos: ParityPhotos, outputs: list[str]) -> Parity:
    """``got``: the variant's outputs by name on ``photos.pixels``."""
    max_abs = max(_max_abs(got[n], r) for n, r in zip(outputs, photos.reference, strict=True))
    agreement = psnr_db = None
    if "probabilities" in outputs:
        ref = photos.reference[outputs.index("probabilities")]
        agreement = float((got["probabilities"].argmax(1) == ref.argmax(1)).mean())
    if photos.picture is not None and photos.picture in outputs:
        psnr_db = round(psnr(got[photos.picture], photos.reference[outputs.index(photos.picture)]), 2)
    return Parity(images=len(photos.pixels), on=photos.on, max_abs=max_abs if np.isfinite(max_abs) else 1e30,
                  top1_agreement=agreement, psnr_db=psnr_db)


def _max_abs(got: np.ndarray, reference: np.ndarray) -> float:
    """In float64: uint8 outputs (a picture's pixels) would wrap around below 0."""
    return float(np.abs(got.astype(np.float64) - reference.astype(np.float64)).max(initial=0.0))


def over_bars(key: str, got: dict[str, np.ndarray], photos: ParityPhotos, outputs: list[str]) -> str | None:
    """Why the fp32 variant ``key`` fails ``photos.bars`` (output by output), or None."""
    if photos.bars is None or not key.endswith("fp32"):
        return None
    over = [f"{n} by up to {d:.3g} (at most {photos.bars[n]:g})" for n, r in zip(outputs, photos.reference, strict=True)
            if not (d := _max_abs(got[n], r)) <= photos.bars[n]]  # NaN too
    if not over:
        return None
    return (f"{key}: its outputs differ from PyTorch's on {len(photos.pixels)} {photos.on} photos: {'; '.join(over)}, "
            "so it is not written; export without it: --formats onnx")


def wrong_dtypes(key: str, variant: Variant, got: dict[str, np.ndarray]) -> str | None:
    """Why the variant ``key`` fails because an output is not of the bundle's dtype (a quantiser that leaves int8
    outputs: their values are not the model's, though their top class may be), or None."""
    wrong = [f"{t.name} is {got[t.name].dtype}, not {t.dtype}" for t in variant.outputs
             if got[t.name].dtype != np.dtype(t.dtype)]
    if not wrong:
        return None
    fmt, _, precision = key.partition("-")
    instead = f"export with fp32 only: --formats onnx,{fmt}-fp32" if precision == "int8" else "export without it: --formats onnx"
    return f"{key}: its outputs are not the bundle's ({'; '.join(wrong)}), so it is not written; {instead}"


def failed(key: str, parity: Parity, photos: ParityPhotos) -> str | None:
    """Why the variant ``key`` (``litert-int8`` …) fails its parity check (so it is not written), or None."""
    fmt = key.partition("-")[0]
    if key.endswith("fp32") and photos.bars is None and parity.max_abs > FP32_MAX_ABS:
        return (f"{key}: its outputs differ from PyTorch's by up to {parity.max_abs:.3g} on {parity.images} "
                f"{parity.on} photos (at most {FP32_MAX_ABS:g} is allowed), so it is not written; export without it: "
                "--formats onnx")
    if key.endswith("int8") and parity.psnr_db is not None:  # an image-to-image model: its pictures are the bar
        if parity.psnr_db >= INT8_PICTURE_DB:
            return None
        return (f"{key}: its pictures came {parity.psnr_db:.1f} dB from PyTorch's on {parity.images} {parity.on} photos "
                f"(at least {INT8_PICTURE_DB:g} dB is needed), so it is not written; export with fp32 only: "
                f"--formats onnx,{fmt}-fp32")
    if key.endswith("int8") and parity.top1_agreement is None:  # neither a classifier nor a picture: no int8 bar
        return (f"{key}: the model has no top class to agree on (no 'probabilities'), so int8's check does not apply "
                f"and it is not written; export with fp32 only: --formats onnx,{fmt}-fp32")
    bar = min(INT8_AGREEMENT, photos.onnx_int8_agreement)
    if key.endswith("int8") and (parity.top1_agreement or 0.0) < bar:
        return (f"{key}: it picks PyTorch's top class on {parity.top1_agreement:.0%} of {parity.images} {parity.on} "
                f"photos (at least {bar:.0%} is needed: the int8 ONNX model's agreement, or 99%), so it is not "
                f"written; export with fp32 only: --formats onnx,{fmt}-fp32")
    return None


def keep(key: str, variant: Variant, got: dict[str, np.ndarray], photos: ParityPhotos, asked: bool,
         log: logging.Logger) -> Variant | None:
    """``variant`` with its measured parity, or None when it fails the bar and nobody ``asked`` for it (said as a
    warning on ``log``); BundleError when it fails and the user asked for it (--formats)."""
    parity = measure(got, photos, [t.name for t in variant.outputs])
    why = (wrong_dtypes(key, variant, got) or over_bars(key, got, photos, [t.name for t in variant.outputs])
           or failed(key, parity, photos))
    if why is not None and asked:
        raise BundleError(why)
    if why is not None:
        log.warning("%s", why)
        return None
    return variant.model_copy(update={"parity": parity})
