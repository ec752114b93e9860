"""A photo's decoding budget on the server (the image endpoint), STYLE 18.

A photo is a few kilobytes that may ask for gigabytes: a 40-megapixel canvas, a 16-bit PNG, a shape
no model can use. Before a pixel is decoded:

- **Shape**: the header's width and height must make a photo: at least 1 pixel, at most
  ``MAX_ASPECT`` times as wide as tall (or tall as wide). 20000×1 is a 400, not a crash further on.
- **Cost**: the memory the decoder would take (width × height × the format's bytes per pixel, read
  from a PNG's header: bit depth and colour type; plus the RGB copy) must stay under
  TANDEM_DECODE_MAX_BYTES: 16-bit and huge-canvas PNGs above it are refused.
- **Pixels, sized to the model**: a JPEG larger than the model can use (64 times its input's pixels,
  at least 2 MP: enough for the face finder and the crop) is decoded at 1/2, 1/4 or 1/8 scale by its
  own DCT (Pillow's ``draft``), far cheaper than decoding it whole and shrinking it; nothing is decoded
  to more than TANDEM_DECODE_MAX_PIXELS (a larger non-JPEG is refused; a larger JPEG, a 48 or 200 MP
  phone photo, is reduced further to fit). A progressive JPEG's decoder holds all of its coefficients
  whatever the scale: they count against TANDEM_DECODE_MAX_BYTES.

Then the work runs in a bounded pool (TANDEM_DECODE_THREADS threads, TANDEM_DECODE_QUEUE waiting, more:
503 at once), and stops when its request does: work still queued is dropped, a running decode stops
at its next read of the photo's bytes, and later stages (finding the face, cropping) do not start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image, ImageOps, UnidentifiedImageError

from tandem.bundle.preprocess import (
    FORMATS,
    MAX_IMAGE_PIXELS,
    check_jpeg_frame,
    dct_scale,
    declared_size,
    jpeg_frame,
    reduce_jpeg,
)
from tandem.errors import ImageError, Unavailable

T = TypeVar("T")
MAX_ASPECT = 20
DRAFT_FLOOR_PIXELS = 2_000_000  # JPEGs are decoded reduced down to this many pixels at least
MODEL_PIXEL_FACTOR = 64  # ... or this many times the model input's pixels, whichever is more
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


class Cancelled(Exception):
    """The request this work was for has ended (timed out or gone): stop."""


@dataclass(frozen=True)
class Budget:
    max_pixels: int  # nothing decoded to more
    max_bytes: int  # the decoder's memory, judged from the header
    target_pixels: int  # what the model can use: JPEGs are decoded reduced down to it

    @classmethod
    def for_model(cls, height: int, width: int, max_pixels: int, max_bytes: int) -> Budget:
        target = min(max_pixels, max(DRAFT_FLOOR_PIXELS, MODEL_PIXEL_FACTOR * height * width))
        return cls(max_pixels, max_bytes, target)


class _Source(io.BytesIO):
    """The photo's bytes, refusing to be read once the work was cancelled (Pillow decodes block by
    block as it reads, so a cancelled decode stops at its next block)."""

    def __init__(self, data: bytes, cancelled: threading.Event) -> None:
        super().__init__(data)
        self._cancelled = cancelled

    def read(self, size: int | None = -1) -> bytes:
        if self._cancelled.is_set():
            raise Cancelled()
        return super().read(size)


def _png_bytes_per_pixel(data: bytes) -> float | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    depth, colour = data[24], data[25]
    return _PNG_CHANNELS.get(colour, 4) * max(depth, 8) / 8


def check_shape(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"the photo is {width}×{height} pixels: it has no pixels to look at")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"the photo is {width}×{height} pixels, more than {MAX_ASPECT} times as long as it is "
                         "wide: no model input comes out of that shape; send a photo")


def decode(data: bytes, budget: Budget, cancelled: threading.Event | None = None) -> Image.Image:
    """An upright RGB image of ``data`` within ``budget``, or ImageError saying why not (Cancelled when
    ``cancelled`` is set before it is done)."""
    cancelled = cancelled or threading.Event()
    frame = jpeg_frame(io.BytesIO(data))
    if frame is not None:
        check_shape(frame.width, frame.height)
        check_jpeg_frame("image bytes", frame, budget.max_bytes,
                         f"the server's {budget.max_bytes / 2**20:,.0f} MiB (TANDEM_DECODE_MAX_BYTES)")
    elif (size := declared_size(io.BytesIO(data))) is not None:
        width, height = size
        check_shape(width, height)
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageError(f"image too large ({width}×{height}, over {MAX_IMAGE_PIXELS:,} pixels); send a "
                             "smaller photo, or save it as JPEG (a large JPEG is read at reduced size)")
        per_pixel = _png_bytes_per_pixel(data)
        if per_pixel is not None:
            cost = width * height * (per_pixel + 3)
            if cost > budget.max_bytes:
                raise ImageError(f"the PNG is {width}×{height} pixels of {per_pixel:g} bytes each: decoding it would "
                                 f"take {cost / 2**20:,.0f} MiB, over the server's {budget.max_bytes / 2**20:,.0f} MiB "
                                 "(TANDEM_DECODE_MAX_BYTES); send an 8-bit photo, or a smaller one")
    try:
        img: Image.Image = Image.open(_Source(data, cancelled), formats=FORMATS)
        check_shape(img.width, img.height)
        if img.format == "JPEG":
            # The largest DCT reduction (1/2, 1/4, 1/8) that still leaves target_pixels (far less work),
            # and at least the one that brings it within max_pixels.
            reduce_jpeg(img, dct_scale(img.width, img.height, budget.max_pixels, budget.target_pixels))
        if img.width * img.height > budget.max_pixels:
            raise ImageError(f"the photo is {img.width}×{img.height} pixels, over the {budget.max_pixels:,} this "
                             "server decodes (TANDEM_DECODE_MAX_PIXELS); send a JPEG, or a smaller photo")
        img.load()
    except (ImageError, Cancelled):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image too large (over {MAX_IMAGE_PIXELS:,} pixels); send a smaller photo") from e
    except UnidentifiedImageError as e:
        raise ImageError("image bytes: not a readable image; send a JPEG, PNG, WebP, GIF or BMP file") from e
    except Exception as e:  # a malformed file can make a decoder fail in its own way
        raise ImageError(f"image bytes: not a readable image ({type(e).__name__}: {str(e)[:120]}); send a JPEG or "
                         "PNG file") from e
    if cancelled.is_set():
        raise Cancelled()
    img = ImageOps.exif_transpose(img)
    return img if img.mode == "RGB" else img.convert("RGB")


class DecodePool:
    """Photos decoded at once (``threads``) and waiting (``queue``) per worker; past both, 503 at once."""

    def __init__(self, threads: int, queue: int, refused: Callable[[], None] = lambda: None) -> None:
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.queue = queue
        self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="tandem-decode")
        self._pending = 0  # submitted and not finished (running or queued, cancelled ones still running included)
        self._refused = refused

    async def run(self, work: Callable[[threading.Event], T]) -> T:
        """``work(cancelled)`` in the pool; when the awaiting request is cancelled (its time limit), the
        work is dropped if it has not started, else told to stop through ``cancelled``."""
        if self._pending >= self.threads + self.queue:
            self._refused()
            raise Unavailable(f"the server is decoding as many photos as it may ({self.threads} at once, "
                              f"{self.queue} waiting: TANDEM_DECODE_THREADS, TANDEM_DECODE_QUEUE); retry shortly",
                              retry_after=1)
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        self._pending += 1
        future = self._pool.submit(_guarded, work, cancelled)
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._done))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancelled.set()
            future.cancel()  # drops it if it has not started
            raise

    def _done(self) -> None:
        self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _guarded(work: Callable[[threading.Event], T], cancelled: threading.Event) -> T:
    if cancelled.is_set():
        raise Cancelled()
    try:
        return work(cancelled)
    except (ImageError, Cancelled):
        raise
    except (ValueError, OSError, Image.DecompressionBombError) as e:
        # Everything here comes from the photo: a shape or content no stage can use is the client's 400.
        raise ImageError(f"the photo cannot be processed ({type(e).__name__}: {str(e)[:120]}); send a JPEG or PNG "
                         "photo") from e
