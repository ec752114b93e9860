"""The server's photo budget (server/photos.py): shapes, decoding cost, JPEGs decoded reduced to what
the model can use, a bounded pool whose work stops with its request."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import pytest
from PIL import Image

from tandem.errors import ImageError, Unavailable
from tandem.server.photos import Budget, Cancelled, DecodePool, decode

BUDGET = Budget.for_model(64, 64, max_pixels=16_000_000, max_bytes=128 << 20)


def png_header(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG's signature and IHDR chunk alone: what the budget judges before decoding anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def test_the_budget_is_sized_to_the_model():
    assert BUDGET.target_pixels == 2_000_000  # a small model: the floor
    assert Budget.for_model(300, 300, 16_000_000, 1 << 30).target_pixels == 64 * 300 * 300
    assert Budget.for_model(4096, 4096, 16_000_000, 1 << 30).target_pixels == 16_000_000


def test_a_large_jpeg_is_decoded_reduced_by_its_dct():
    img = decode(jpeg(4000, 3000), BUDGET)
    assert img.size == (2000, 1500) and img.mode == "RGB"  # 1/2 scale: the smallest that keeps 2 MP
    assert decode(jpeg(800, 600), BUDGET).size == (800, 600)  # small ones are decoded whole


def test_a_48_megapixel_phone_photo_is_decoded_reduced_to_fit():
    photo = jpeg(8000, 6000)
    assert decode(photo, BUDGET).size == (2000, 1500)  # 1/4: what a small model can use
    # A large model would use all 16 MP this server decodes: 1/2 brings it within them.
    assert decode(photo, Budget.for_model(1000, 1000, 16_000_000, 128 << 20)).size == (4000, 3000)
    progressive = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(progressive, "JPEG", progressive=True)  # 3 MB of coefficients (4:2:0)
    with pytest.raises(ImageError, match=r"progressive JPEG of 1000×1000 pixels.*over the server's 2 MiB "
                                         r"\(TANDEM_DECODE_MAX_BYTES\)"):
        decode(progressive.getvalue(), Budget(max_pixels=16_000_000, max_bytes=2 << 20, target_pixels=2_000_000))


@pytest.mark.parametrize(("data", "words"), [
    (png_header(20000, 1), "more than 20 times as long"),
    (png_header(1, 20000), "more than 20 times as long"),
    (png_header(5000, 5000, depth=16, colour=6), "of 8 bytes each"),  # 16-bit RGBA
    (png_header(6000, 6000, depth=8, colour=6), "over the server's 128 MiB"),  # a huge canvas
    (png_header(8000, 6000), "over 40,000,000 pixels\\); send a smaller photo, or save it as JPEG"),
])
def test_costly_or_degenerate_photos_are_refused_from_their_header(data, words):
    with pytest.raises(ImageError, match=words):
        decode(data, BUDGET)


def test_a_non_jpeg_over_the_pixel_cap_is_refused():
    buf = io.BytesIO()
    Image.new("L", (1200, 1000)).save(buf, "PNG")
    with pytest.raises(ImageError, match="TANDEM_DECODE_MAX_PIXELS"):
        decode(buf.getvalue(), Budget(max_pixels=1_000_000, max_bytes=1 << 30, target_pixels=1_000_000))


def test_a_cancelled_decode_stops():
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        decode(jpeg(100, 100), BUDGET, cancelled)


def test_the_pool_bounds_work_and_stops_what_its_request_abandons():
    async def main() -> None:
        pool = DecodePool(threads=1, queue=0)
        started, seen = threading.Event(), threading.Event()

        def slow(cancelled: threading.Event) -> str:
            started.set()
            if cancelled.wait(10):  # a decode between two reads of its bytes
                seen.set()
                raise Cancelled()
            return "done"

        first = asyncio.create_task(pool.run(slow))
        await asyncio.to_thread(started.wait, 10)
        with pytest.raises(Unavailable, match="TANDEM_DECODE_THREADS"):  # one thread, no queue: busy
            await pool.run(slow)
        first.cancel()  # its request timed out
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.to_thread(seen.wait, 10)  # the running work was told, and stopped
        for _ in range(100):  # its thread is free again once the work returned
            if pool._pending == 0:
                break
            await asyncio.sleep(0.01)
        assert await pool.run(lambda cancelled: "next") == "next"
        pool.close()

    asyncio.run(main())


def test_errors_of_any_stage_are_the_photos_400():
    async def main() -> None:
        pool = DecodePool(threads=1, queue=1)

        def resize_to_nothing(cancelled: threading.Event) -> None:
            Image.new("RGB", (10, 10)).resize((0, 1))

        with pytest.raises(ImageError, match="cannot be processed"):
            await pool.run(resize_to_nothing)
        pool.close()

    asyncio.run(main())
