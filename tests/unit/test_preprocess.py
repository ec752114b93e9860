import io
import warnings

import numpy as np
import pytest
from PIL import Image

from tandem.bundle.preprocess import (
    MAX_COEFFICIENT_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_JPEG_PIXELS,
    CropSpec,
    JpegFrame,
    NormalizeSpec,
    PreprocessSpec,
    check_pixels,
    dct_scale,
    decode_image,
    jpeg_frame,
    to_input,
)
from tandem.errors import ImageError

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
    # 150 × 0.75 = 112.5: halves round up, as in JavaScript (Python's round() would give 112).
    assert s.crop_pixels(150, 150) == (18, 0, 131, 150)


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


def test_resize_is_the_documented_antialiased_bilinear():
    """Golden values pin the filter the spec names, for other runtimes to match. A 2× downscale
    uses a triangle of support 2: output i is centred on source 2i+1 and weighs sources 2i-1..2i+2
    by 1/4, 3/4, 3/4, 1/4, dropping those outside the image and renormalising."""
    row = np.array([0, 80, 160, 240, 0, 80, 160, 240], np.uint8)
    arr = np.repeat(np.tile(row, (8, 1))[:, :, None], 3, axis=2)
    s = PreprocessSpec(height=4, width=4, normalize_in_graph=NORM, crop=CropSpec(mode="none"))
    out = to_input(Image.fromarray(arr), s)[0, :, 0]
    # (0·¾ + 80·¾ + 160·¼)/1.75 = 57.1;  (80·¼ + 160·¾ + 240·¾ + 0·¼)/2 = 160;
    # (240·¼ + 0·¾ + 80·¾ + 160·¼)/2 = 80;  (80·¼ + 160·¾ + 240·¾)/1.75 = 182.9
    assert out.tolist() == [57, 160, 80, 183]


def test_decode_rejects_non_images_and_truncated_files(tmp_path):
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"this is text, not a photo")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(jpeg.getvalue()[:100])
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "missing.jpg")


def test_decompression_bomb_guard_is_our_own_and_explicit():
    assert Image.MAX_IMAGE_PIXELS == MAX_JPEG_PIXELS  # Pillow's, behind ours: the largest of ours
    # A small PNG that claims 50M pixels: above our limit, below Pillow's hard error (2x). Pillow
    # only warns there, so with warnings silenced it is our check that must refuse it.
    big = Image.new("1", (7100, 7100))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImageError, match="too large"):
            decode_image(buf.getvalue())


def jpeg_bytes(width: int, height: int, **kw: object) -> bytes:
    """A JPEG of one colour: even 48 megapixels of it are made in a fraction of a second."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (150, 110, 90)).save(buf, format="JPEG", quality=70, **kw)
    return buf.getvalue()


def claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with a frame header that declares another size."""
    out = bytearray(data)
    i = 2
    while out[i + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments to the frame header
        i += 2 + int.from_bytes(out[i + 2 : i + 4], "big")
    out[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def test_a_48_megapixel_phone_photo_is_decoded_reduced_and_a_png_that_size_refused():
    exif = Image.Exif()
    exif[0x0112] = 6  # a portrait, stored sideways
    img = decode_image(jpeg_bytes(8000, 6000, exif=exif.tobytes()))
    assert img.size == (3000, 4000) and img.mode == "RGB"  # 1/2 by the JPEG's own DCT, then turned upright
    assert np.abs(np.asarray(img)[2000, 1500].astype(int) - (150, 110, 90)).max() <= 3
    png = io.BytesIO()
    Image.new("1", (8000, 6000)).save(png, format="PNG")  # PNG has no reduced decoding
    with pytest.raises(ImageError, match=r"image too large \(8000×6000, over 40,000,000 pixels\); send a smaller "
                                         "photo, or save it as JPEG"):
        decode_image(png.getvalue())


def test_a_jpeg_too_large_or_too_costly_even_reduced_is_refused_from_its_header():
    baseline, progressive = jpeg_bytes(48, 32), jpeg_bytes(48, 32, progressive=True)
    with pytest.raises(ImageError, match=r"image too large \(20000×20000, over 256,000,000 pixels\)"):
        decode_image(claiming(baseline, 20000, 20000))
    # A progressive JPEG's decoder holds every coefficient: 2 bytes a sample, chroma at a quarter (4:2:0).
    frame = jpeg_frame(io.BytesIO(claiming(progressive, 12000, 9000)))
    assert frame == JpegFrame(12000, 9000, True, ((2, 2), (1, 1), (1, 1)))
    assert frame.coefficient_bytes() == 3 * 12000 * 9000 > MAX_COEFFICIENT_BYTES
    with pytest.raises(ImageError, match=r"progressive JPEG of 12000×9000 pixels.*309 MiB.*baseline"):
        decode_image(claiming(progressive, 12000, 9000))
    assert jpeg_frame(io.BytesIO(baseline)) == JpegFrame(48, 32, False, ((2, 2), (1, 1), (1, 1)))


def test_the_dct_reduction_fits_the_limit_and_keeps_what_is_asked():
    assert dct_scale(8000, 6000, MAX_IMAGE_PIXELS) == 2
    assert dct_scale(16320, 12240, MAX_IMAGE_PIXELS) == 4  # a 200 MP phone photo
    assert dct_scale(6000, 6000, MAX_IMAGE_PIXELS) == 1
    assert dct_scale(8000, 6000, 16_000_000, least=2_000_000) == 4  # the server: down to what the model uses
    assert dct_scale(8000, 6000, 16_000_000, least=16_000_000) == 2  # ... but within its pixel cap
    assert dct_scale(65535, 65535, 1_000_000) == 8  # the most there is


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 20), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).size == (20, 60)


def test_a_crop_window_of_nothing_is_an_image_error():
    s = spec(crop=CropSpec(mode="box", box=(0.5, 0.5, 0.501, 0.9)))
    with pytest.raises(ImageError, match="too small"):
        to_input(Image.new("RGB", (10, 10)), s)


def test_check_pixels_names_the_expected_shape_and_dtype():
    s = spec()
    assert check_pixels(np.zeros((100, 75, 3), np.uint8), s).shape == (1, 100, 75, 3)
    with pytest.raises(ImageError, match=r"expected \(N, 100, 75, 3\)"):
        check_pixels(np.zeros((2, 64, 64, 3), np.uint8), s)
    with pytest.raises(ImageError, match="expected uint8"):
        check_pixels(np.zeros((2, 100, 75, 3), np.float32), s)
