"""Photos from the network (the image endpoint, the CLI): random bytes, damaged JPEG/PNG/WebP/GIF/BMP
files and headers that declare any size. Every input decodes to an RGB image within the pixel
limit or raises ImageError; an image over the limit is refused from its header, naming its size."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tandem.bundle.preprocess import FORMATS, MAX_IMAGE_PIXELS, MAX_JPEG_PIXELS, declared_size, decode_image
from tandem.errors import ImageError
from tests.fuzz import tally
from tests.fuzz.strategies import mutated


def _encode(fmt: str, size: tuple[int, int] = (24, 16), mode: str = "RGB", **kw: object) -> bytes:
    img = Image.linear_gradient("L").resize(size).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


SEEDS = {
    "jpeg": _encode("JPEG", exif=_exif(6)),  # rotated: exif_transpose must turn it
    "jpeg-progressive": _encode("JPEG", progressive=True, quality=50),
    "png": _encode("PNG", mode="RGBA"),
    "png-palette": _encode("PNG", mode="P"),
    "webp": _encode("WEBP", lossless=True),
    "webp-extended": _encode("WEBP", exif=_exif(1)),  # VP8X: a canvas size
    "gif": _encode("GIF", mode="P"),
    "bmp": _encode("BMP"),
}


def decode(data: bytes) -> None:
    img = tally.run("image", lambda: decode_image(data), (ImageError,))
    if img is not None:
        assert img.mode == "RGB" and img.width * img.height <= MAX_IMAGE_PIXELS


@settings(max_examples=tally.budget(150))
@given(st.binary(max_size=256) | st.sampled_from([s[:12] for s in SEEDS.values()]).flatmap(
    lambda head: st.binary(max_size=200).map(lambda tail: head + tail)))
def test_random_bytes(data):
    decode(data)


@settings(max_examples=tally.budget(400))
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda k: mutated(SEEDS[k], max_edits=3)))
def test_damaged_photos(data):
    decode(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, pixels: bytes = b"\0" * 64) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(pixels))
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(SEEDS["jpeg"])  # baseline: a progressive one this size is refused for its coefficients
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments to the frame header
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(SEEDS["gif"])
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(SEEDS["bmp"])
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    data = bytearray(SEEDS["webp-extended"])
    assert data[12:16] == b"VP8X"  # its canvas: 24-bit width and height, minus one
    data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


CLAIMS = {"png": (png_claiming, 2**31 - 1), "jpeg": (jpeg_claiming, 65535), "gif": (gif_claiming, 65535),
          "bmp": (bmp_claiming, 2**31 - 1), "webp": (webp_claiming, 2**24)}
LIMITS = {"jpeg": MAX_JPEG_PIXELS}  # decoded reduced up to there; the others: MAX_IMAGE_PIXELS


@st.composite
def claimed(draw: st.DrawFn) -> tuple[str, int, int]:
    fmt = draw(st.sampled_from(sorted(CLAIMS)))
    top = CLAIMS[fmt][1]
    if draw(st.booleans()):  # within the limit: small enough to let Pillow try them quickly
        return fmt, draw(st.integers(1, 1500)), draw(st.integers(1, 1500))
    limit = LIMITS.get(fmt, MAX_IMAGE_PIXELS)
    w = draw(st.integers(limit // top + 1, top))
    return fmt, w, draw(st.integers(limit // w + 1, top))


@settings(max_examples=tally.budget(200))
@given(claimed())
def test_declared_sizes_are_judged_from_the_header(claim):
    fmt, w, h = claim
    data = CLAIMS[fmt][0](w, h)
    assert declared_size(io.BytesIO(data)) == (w, h)
    if w * h <= LIMITS.get(fmt, MAX_IMAGE_PIXELS):
        decode(data)
        return

    def refused() -> None:
        with pytest.raises(ImageError, match=f"image too large \\({w}×{h}, over"):
            decode_image(data)

    tally.run("image", refused)


@pytest.mark.parametrize("fmt", sorted(CLAIMS))
@pytest.mark.parametrize("over", [1.25, 2.5])
def test_over_the_limit_the_message_names_the_size_before_pillow_warns(fmt, over):
    """1.25 times the format's limit: under Pillow's error, where Pillow used to warn first (and pytest
    turns warnings into errors); 2.5 times: over Pillow's own error. Both name the size."""
    side = int((over * LIMITS.get(fmt, MAX_IMAGE_PIXELS)) ** 0.5)
    with pytest.raises(ImageError, match=f"{side}×{side}"):
        decode_image(CLAIMS[fmt][0](side, side))


def test_a_real_large_png_is_refused_from_its_header():
    big = io.BytesIO()
    Image.new("1", (7100, 7100)).save(big, format="PNG")
    with pytest.raises(ImageError, match="7100×7100"):
        decode_image(big.getvalue())


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "PCX"])
def test_formats_that_are_not_photos_are_refused(fmt):
    assert fmt not in FORMATS
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(_encode(fmt))


def test_the_seeds_decode_upright():
    assert decode_image(SEEDS["jpeg"]).size == (16, 24)  # EXIF orientation 6: turned a quarter
    for name, data in SEEDS.items():
        assert decode_image(data).mode == "RGB", name
