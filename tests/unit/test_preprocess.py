import io

import numpy as np
import pytest
from PIL import Image

from tandem.errors import ImageError
from tandem.preprocess import (
    MAX_IMAGE_PIXELS, CropSpec, NormalizeSpec, PreprocessSpec, check_pixels, decode_image, to_input,
)

NORM = NormalizeSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def spec(**kw) -> PreprocessSpec:
    return PreprocessSpec(height=100, width=75, normalize_in_graph=NORM, **kw)


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_center_crop_keeps_target_aspect():
    s = spec(crop=CropSpec(mode="center"))
    assert s.crop_pixels(300, 100) == (112, 0, 187, 100)  # too wide: trim the sides
    assert s.crop_pixels(75, 300) == (0, 100, 75, 200)  # too tall: trim top and bottom


def test_box_crop_is_fractional():
    s = spec(crop=CropSpec(mode="box", box=(78 / 250, 70 / 250, 172 / 250, 195 / 250)))
    assert s.crop_pixels(250, 250) == (78, 70, 172, 195)


def test_box_crop_validates():
    with pytest.raises(ValueError, match="needs box"):
        CropSpec(mode="box")
    with pytest.raises(ValueError, match="must satisfy"):
        CropSpec(mode="box", box=(0.5, 0, 0.4, 1))


def test_to_input_gives_uint8_rgb_of_model_size_from_gray_and_rgba():
    gray = np.full((200, 160), 77, np.uint8)
    x = to_input(decode_image(png_bytes(gray)), spec())
    assert x.shape == (100, 75, 3) and x.dtype == np.uint8
    assert (x == 77).all()
    rgba = np.zeros((50, 50, 4), np.uint8)
    assert to_input(decode_image(png_bytes(rgba, "RGBA")), spec()).shape == (100, 75, 3)


def test_resize_matches_pillow_bilinear():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
    s = spec(crop=CropSpec(mode="none"))
    expected = np.asarray(Image.fromarray(arr).resize((75, 100), Image.Resampling.BILINEAR))
    assert np.array_equal(to_input(Image.fromarray(arr), s), expected)


def test_decode_rejects_non_images_and_truncated_files(tmp_path):
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"this is text, not a photo")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(jpeg.getvalue()[:100])
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "missing.jpg")


def test_decompression_bomb_guard_is_set():
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
    # A tiny PNG that claims a huge size is refused before its pixels are read.
    big = Image.new("1", (8000, 8000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(ImageError, match="too large"):
        decode_image(buf.getvalue())


def test_check_pixels_names_the_expected_shape_and_dtype():
    s = spec()
    assert check_pixels(np.zeros((100, 75, 3), np.uint8), s).shape == (1, 100, 75, 3)
    with pytest.raises(ImageError, match=r"expected \(N, 100, 75, 3\)"):
        check_pixels(np.zeros((2, 64, 64, 3), np.uint8), s)
    with pytest.raises(ImageError, match="expected uint8"):
        check_pixels(np.zeros((2, 100, 75, 3), np.float32), s)
