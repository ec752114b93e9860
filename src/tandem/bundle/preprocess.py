"""The preprocessing every runtime applies before the model: decode, crop, resize to uint8 RGB.

The arithmetic after that (cast, scale, mean/std, NHWC->NCHW) lives inside the ONNX graph, so a
server, a Python device and a browser only have to agree on these three steps. Resizing follows
Pillow's BILINEAR filter (a triangle filter whose support widens with the downscale factor), the
one written down in docs/bundle.md.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field, model_validator

from tandem.errors import ImageError

# Images with more pixels are refused from their header, before Pillow opens them, so that the
# message names the dimensions; nothing is decoded to more.
MAX_IMAGE_PIXELS = 40_000_000
# But a JPEG (a 48- or 200-megapixel phone photo) is decoded reduced to fit, at 1/2, 1/4 or 1/8 scale
# by its own DCT (Pillow's draft mode), far cheaper than decoding it whole: up to this many pixels.
MAX_JPEG_PIXELS = 256_000_000
DCT_SCALES = (1, 2, 4, 8)
# A progressive JPEG's decoder holds every DCT coefficient of the whole image (2 bytes each) until its
# last scan, whatever the scale: its memory, from the header, up to that of a 40 MP 4:4:4 one.
MAX_COEFFICIENT_BYTES = MAX_IMAGE_PIXELS * 3 * 2
# Pillow's own guard (a warning above this, an error above twice this; also for GIF frames and other
# sizes found later) stays on behind ours, at the JPEG limit, the largest of ours.
Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS
# The formats of photos. Pillow reads dozens more (EPS through Ghostscript, TIFF through libtiff,
# ...): each one a parser that anyone with a predict key could aim at, for no photo's sake.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

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


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's frame header declares."""

    width: int
    height: int
    progressive: bool
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) sampling factors of each component

    def coefficient_bytes(self) -> int:
        """The memory a decoder holds for the whole image's coefficients: a progressive JPEG's (2 bytes a
        sample of each component, subsampled ones fewer); 0 for a baseline one, which is decoded in a stream."""
        if not self.progressive or not self.sampling:
            return 0
        hmax = max(h for h, _ in self.sampling) or 1
        vmax = max(v for _, v in self.sampling) or 1
        return sum(2 * -(-self.width * h // hmax) * -(-self.height * v // vmax) for h, v in self.sampling)


def jpeg_frame(f: BinaryIO) -> JpegFrame | None:
    """The frame header of a JPEG file, read without decoding anything; None when ``f`` is not a JPEG or
    its header cannot be found (Pillow then decides what the file is)."""
    start = f.tell()
    try:
        return _jpeg_frame(f) if f.read(2) == b"\xff\xd8" else None
    finally:
        f.seek(start)


def _jpeg_frame(f: BinaryIO) -> JpegFrame | None:
    while True:  # every turn reads at least one byte or skips a segment: it ends with the file
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None  # not where a marker should be: let Pillow judge the file
        code = marker[1]
        while code == 0xFF:  # fill bytes
            nxt = f.read(1)
            if not nxt:
                return None
            code = nxt[0]
        if code in _JPEG_FRAMES:
            head = f.read(8)
            if len(head) < 8:
                return None
            components = f.read(3 * head[7])
            sampling = tuple((b >> 4, b & 0x0F) for b in components[1::3])
            return JpegFrame(int.from_bytes(head[5:7], "big"), int.from_bytes(head[3:5], "big"),
                             code in _PROGRESSIVE_FRAMES, sampling)
        if code in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2 or int.from_bytes(length, "big") < 2:
            return None
        f.seek(int.from_bytes(length, "big") - 2, io.SEEK_CUR)


def dct_scale(width: int, height: int, most: int, least: int | None = None) -> int:
    """The reduction (1, 2, 4 or 8 in each direction) to decode a JPEG of this size at: the largest that
    keeps at least ``least`` pixels (default: ``most``), and at least the smallest that brings it to
    ``most`` or fewer (1/8 when even that does not)."""
    pixels, least = width * height, most if least is None else least
    fit = next((s for s in DCT_SCALES if pixels <= most * s * s), DCT_SCALES[-1])
    keep = max((s for s in DCT_SCALES if pixels >= least * s * s), default=1)
    return max(fit, keep)


def reduce_jpeg(img: Image.Image, scale: int) -> None:
    """Have an opened JPEG decode at 1/``scale`` (draft mode); its size becomes the reduced one."""
    if scale > 1:
        # draft picks the largest reduction that still gives at least the size asked for.
        img.draft("RGB", (img.width // scale, img.height // scale))


# Start-of-frame markers: every JPEG coding but the DHT, JPG and DAC markers that share the range.
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE_FRAMES = {0xC2, 0xC6, 0xCA, 0xCE}


def _header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first 32 bytes of a PNG, GIF, BMP or WebP file, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head.startswith(b"BM") and len(head) >= 26:
        if int.from_bytes(head[14:18], "little") == 12:  # OS/2 bitmap header
            return struct.unpack("<HH", head[18:22])
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)  # a negative height means top-down rows
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 ":
            return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


def declared_size(f: BinaryIO) -> tuple[int, int] | None:
    """The (width, height) a JPEG, PNG, GIF, BMP or WebP header declares, read without decoding
    anything; None when the header does not say (Pillow then decides what the file is)."""
    head = f.read(32)
    f.seek(0)
    if head.startswith(b"\xff\xd8"):
        frame = jpeg_frame(f)
        return (frame.width, frame.height) if frame else None
    return _header_size(head)


def _check_size(name: str, width: int, height: int, limit: int = MAX_IMAGE_PIXELS) -> None:
    if width * height > limit:
        hint = "send a smaller photo"
        if limit < MAX_JPEG_PIXELS:
            hint += ", or save it as JPEG (a large JPEG is read at reduced size)"
        raise ImageError(f"{name}: image too large ({width}×{height}, over {limit:,} pixels); {hint}")


def check_jpeg_frame(name: str, frame: JpegFrame, max_coefficient_bytes: int, budget: str) -> None:
    """Refuse a JPEG larger than any reduction makes usable, or a progressive one whose coefficients
    alone would take more than ``max_coefficient_bytes`` (``budget``: what sets that limit)."""
    _check_size(name, frame.width, frame.height, MAX_JPEG_PIXELS)
    cost = frame.coefficient_bytes()
    if cost > max_coefficient_bytes:
        raise ImageError(f"{name}: a progressive JPEG of {frame.width}×{frame.height} pixels: its decoder holds all "
                         f"{cost / 2**20:,.0f} MiB of its coefficients at once, over {budget}; save it as a baseline "
                         "(not progressive) JPEG, or send a smaller photo")


def decode_image(source: bytes | Path | str) -> Image.Image:
    """Decode JPEG/PNG/... bytes or a file into an upright RGB image, or raise ImageError saying why.

    EXIF orientation is applied (phones store portraits sideways and flag it), as browsers do. A JPEG
    over MAX_IMAGE_PIXELS is decoded reduced (1/2, 1/4 or 1/8) to fit.
    """
    name = str(source) if not isinstance(source, bytes) else "image bytes"
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as f:
            frame = jpeg_frame(f)
            if frame is not None:
                check_jpeg_frame(name, frame, MAX_COEFFICIENT_BYTES,
                                 f"the {MAX_COEFFICIENT_BYTES / 2**20:,.0f} MiB a decode may take")
            elif (size := declared_size(f)) is not None:
                _check_size(name, *size)
            img: Image.Image = Image.open(f, formats=FORMATS)
            if img.format == "JPEG":
                _check_size(name, img.width, img.height, MAX_JPEG_PIXELS)
                reduce_jpeg(img, dct_scale(img.width, img.height, MAX_IMAGE_PIXELS))
            _check_size(name, img.width, img.height)
            img.load()
        img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"{name}: no such file") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: image too large (over {MAX_IMAGE_PIXELS:,} pixels); send a smaller photo") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image; send a JPEG, PNG, WebP, GIF or BMP file") from e
    except (OSError, SyntaxError, ValueError) as e:
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


def check_pixels(pixels: np.ndarray, spec: PreprocessSpec, any_size: bool = False) -> np.ndarray:
    """Accept a HxWx3 or NxHxWx3 uint8 array of the model's size (of any size for a model whose input
    has a free height and width: ``any_size``); anything else is an ImageError."""
    arr = np.asarray(pixels)
    if arr.ndim == 3:
        arr = arr[None]
    expected = (spec.height, spec.width, 3)
    if any_size and arr.ndim == 4 and arr.shape[-1] == 3 and min(arr.shape[1:3]) > 0:
        pass
    elif arr.ndim != 4 or arr.shape[1:] != expected:
        raise ImageError(
            f"pixels of shape {tuple(np.asarray(pixels).shape)} do not fit the model: expected "
            f"(N, {spec.height}, {spec.width}, 3) RGB; pass an image file instead and Tandem resizes it"
        )
    if arr.dtype != np.uint8:
        raise ImageError(f"pixels of dtype {arr.dtype}: expected uint8 values 0..255")
    return np.ascontiguousarray(arr)
