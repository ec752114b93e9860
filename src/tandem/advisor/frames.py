"""Measure what a video frame costs on the wire: real photos at the video's resolution, JPEG-encoded.

A frame's JPEG size depends on what is in it, so it is measured, not assumed: sample photos (LFW's,
or a folder of your own video's frames) are centre-cropped to the video's aspect and resized to its
resolution (or to a fixed-size model's input, as the device would before sending), and encoded at
the quality the deepart app answers with. An image-to-image model's answer is measured the same way
on the model's own output for each frame. LFW's photos are 250×250: scaled up to 640×480 they are
smoother than a camera's frames, so their JPEGs are smaller — an estimate that favours the cloud.
"""

from __future__ import annotations

import io
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tandem.advisor.video import FrameProfile
from tandem.apps.deepart import JPEG_QUALITY
from tandem.apps.deepart import OUTPUT as IMAGE_OUTPUT
from tandem.bundle import Bundle, Manifest
from tandem.bundle.preprocess import decode_image
from tandem.bundle.runtime import load_session
from tandem.data.catalog import IMAGE_SUFFIXES
from tandem.errors import DataError, ImageError

log = logging.getLogger(__name__)
DEFAULT_FRAMES = 16


def model_size(manifest: Manifest, width: int, height: int) -> tuple[int, int, bool]:
    """(height, width) the model runs a ``width``×``height`` frame at, and whether the frame is resized
    to get there: a model of any size takes the frame as it is, a fixed-size one its own input."""
    shape = manifest.inputs[0].shape  # N×H×W×3 (docs/bundle.md)
    if len(shape) == 4 and shape[1] > 0 and shape[2] > 0:
        return shape[1], shape[2], (shape[1], shape[2]) != (height, width)
    return height, width, False


def frame_files(root: Path, count: int = DEFAULT_FRAMES) -> list[Path]:
    """``count`` photos spread evenly over the sorted photos under ``root`` (sub-folders included)."""
    if count < 1:
        raise DataError(f"sample at least one frame, got {count}")
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass --frames DIR holding photos or video frames, or --frames lfw")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no photos in it or its sub-folders ({', '.join(sorted(IMAGE_SUFFIXES))}); pass "
                        "--frames DIR holding photos or video frames, or --frames lfw")
    step = len(files) / min(count, len(files))
    return [files[int(i * step)] for i in range(min(count, len(files)))]


def _frame(path: Path, width: int, height: int) -> np.ndarray | None:
    try:
        img = decode_image(path)
    except ImageError as e:
        log.warning("%s", e)
        return None
    return np.asarray(ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def _jpeg(pixels: np.ndarray) -> tuple[bytes, float]:
    buf = io.BytesIO()
    t0 = time.perf_counter()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), (time.perf_counter() - t0) * 1000.0


def _decode_ms(data: bytes) -> float:
    t0 = time.perf_counter()
    with Image.open(io.BytesIO(data)) as img:
        np.asarray(img.convert("RGB"))
    return (time.perf_counter() - t0) * 1000.0


def measure_frames(bundle: Bundle, files: list[Path], width: int, height: int, *, source: str,
                   threads: int = 1) -> FrameProfile:
    """JPEG bytes up and down and JPEG times for ``width``×``height`` frames made from ``files``."""
    m = bundle.manifest
    h, w, resized = model_size(m, width, height)
    frames = [f for f in (_frame(p, w, h) for p in files) if f is not None]
    if not frames:
        raise DataError(f"none of the {len(files)} sample frames could be read (see the warnings above); pass "
                        "--frames DIR holding photos or video frames")
    sess = load_session(bundle.model_path("fp32"), threads)
    names = [o.name for o in sess.get_outputs()]
    picture = m.task == "image-to-image" and IMAGE_OUTPUT in names
    _decode_ms(_jpeg(frames[0])[0])  # warm up Pillow's codecs: the first call pays for loading them
    up, down, encode, decode = [], [], [], []
    for pixels in frames:
        data, ms = _jpeg(pixels)
        up.append(len(data))
        encode.append(ms)
        decode.append(_decode_ms(data))
        outs = sess.run(None, {sess.get_inputs()[0].name: pixels[None]})
        if picture:
            image = outs[names.index(IMAGE_OUTPUT)][0]
            down.append(len(_jpeg(np.rint(np.clip(image, 0, 255)).astype(np.uint8))[0]))
        else:
            down.append(sum(int(o.nbytes) for o in outs))
    return FrameProfile(
        source=source, count=len(frames), width=w, height=h, resized=resized, quality=JPEG_QUALITY,
        up_bytes=round(statistics.fmean(up)), answer="jpeg" if picture else "tensors",
        down_bytes=round(statistics.fmean(down)), encode_ms=round(statistics.median(encode), 4),
        decode_ms=round(statistics.median(decode), 4),
    )
