"""The preprocessing every runtime applies before the model: decode, crop, resize to uint8 RGB.

The arithmetic after that (cast, scale, mean/std, NHWC->NCHW) lives inside the ONNX graph, so a
server, a Python device and a browser only have to agree on these three steps. Resizing follows
Pillow's BILINEAR filter (a triangle filter whose support widens with the downscale factor), the
one written down in docs/bundle.md.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field, model_validator

from tandem.errors import ImageError

# Images with more pixels are refused from their header, before any pixel is decoded. Pillow's
# own guard (a warning above this, an error above twice this) stays on behind ours.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

Box = tuple[float, float, float, float]


class CropSpec(BaseModel):
    """Which part of the decoded image the model sees.

    ``box``: fractions (x0, y0, x1, y1) of the image's width and height, e.g. LFW's fixed face
    window. ``center``: the largest centred window with the model input's aspect ratio.
    """

    mode: Literal["none", "center", "box"] = "center"
    box: Box | None = None

    @model_validator(mode="after")
    def _box_given_for_box_mode(self) -> CropSpec:
        if self.mode == "box":
            if self.box is None:
                raise ValueError("crop mode 'box' needs box=(x0, y0, x1, y1) as fractions")
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError(f"crop box {self.box} must satisfy 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")
        return self


class NormalizeSpec(BaseModel):
    """Done inside the ONNX graph: x = (pixel / 255 - mean) / std, per RGB channel."""

    scale: float = 1 / 255
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class PreprocessSpec(BaseModel):
    color: Literal["RGB"] = "RGB"
    crop: CropSpec = Field(default_factory=CropSpec)
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    interpolation: Literal["bilinear"] = "bilinear"
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    normalize_in_graph: NormalizeSpec

    def crop_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The crop window in pixels (x0, y0, x1, y1) for an image of this size.

        Integer arithmetic and round-half-up, exactly as docs/bundle.md states, so that every
        runtime (JavaScript's Math.round included) finds the same window.
        """
        if self.crop.mode == "none":
            return 0, 0, width, height
        if self.crop.mode == "box":
            assert self.crop.box is not None
            x0, y0, x1, y1 = self.crop.box
            return (_round_half_up(x0 * width), _round_half_up(y0 * height),
                    _round_half_up(x1 * width), _round_half_up(y1 * height))
        if width * self.height > height * self.width:  # wider than the model input: trim the sides
            w = (2 * height * self.width + self.height) // (2 * self.height)
            x0 = (width - w) // 2
            return x0, 0, x0 + w, height
        h = (2 * width * self.height + self.width) // (2 * self.width)
        y0 = (height - h) // 2
        return 0, y0, width, y0 + h


def _round_half_up(v: float) -> int:
    return int(np.floor(v + 0.5))


def decode_image(source: bytes | Path | str) -> Image.Image:
    """Decode JPEG/PNG/... bytes or a file into an upright RGB image, or raise ImageError saying why.

    EXIF orientation is applied (phones store portraits sideways and flag it), as browsers do.
    """
    name = str(source) if not isinstance(source, bytes) else "image bytes"
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageError(
                f"{name}: image too large ({img.width}×{img.height}, over {MAX_IMAGE_PIXELS:,} pixels); "
                "send a smaller photo"
            )
        img.load()
        img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"{name}: no such file") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: image too large (over {MAX_IMAGE_PIXELS:,} pixels); send a smaller photo") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not a readable image ({e}); send a JPEG or PNG file") from e
    except Exception as e:  # a malformed file can make a decoder fail in its own way
        raise ImageError(f"{name}: the decoder failed ({type(e).__name__}: {e}); send a JPEG or PNG file") from e
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_crop(img: Image.Image, box: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """Crop ``box`` (pixels; may reach outside the image, which reads as black) and resize."""
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ImageError(f"the crop window {box} of a {img.width}×{img.height} image is empty; the image is too small")
    return np.asarray(img.crop(box).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def to_input(img: Image.Image, spec: PreprocessSpec, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One model input, HxWx3 uint8, from a decoded image (``box`` overrides the spec's crop)."""
    if box is None:
        box = spec.crop_pixels(img.width, img.height)
    return resize_crop(img, box, spec.height, spec.width)


def check_pixels(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Accept a HxWx3 or NxHxWx3 uint8 array of the model's size; anything else is an ImageError."""
    arr = np.asarray(pixels)
    if arr.ndim == 3:
        arr = arr[None]
    expected = (spec.height, spec.width, 3)
    if arr.ndim != 4 or arr.shape[1:] != expected:
        raise ImageError(
            f"pixels of shape {tuple(np.asarray(pixels).shape)} do not fit the model: expected "
            f"(N, {spec.height}, {spec.width}, 3) RGB; pass an image file instead and Tandem resizes it"
        )
    if arr.dtype != np.uint8:
        raise ImageError(f"pixels of dtype {arr.dtype}: expected uint8 values 0..255")
    return np.ascontiguousarray(arr)
