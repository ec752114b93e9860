"""Face alignment: landmarks → the template's places, with a warp every runtime can repeat."""

import math

import numpy as np
import pytest
from PIL import Image

from tandem.errors import ImageError
from tandem.faces.align import (
    AlignSpec,
    aligned_crop,
    landmark_box,
    landmark_input,
    points_in_image,
    region_boxes,
    region_views,
    similarity,
    warp,
)

SPEC = AlignSpec.square(80)


def _transform(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a, b = scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))
    return np.array([[a, -b, tx], [b, a, ty]])


def test_similarity_recovers_a_known_transform():
    src = np.array([[10.0, 20.0], [50.0, 22.0], [30.0, 40.0], [15.0, 60.0], [45.0, 61.0]])
    m = _transform(17.0, 1.7, 5.0, -3.0)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity(src, dst), m, atol=1e-9)


def test_similarity_refuses_coinciding_points():
    with pytest.raises(ImageError, match="coincide"):
        similarity(np.ones((5, 2)), SPEC.points())


def test_the_identity_warp_gives_the_image_back():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 40, 30), img)


def test_a_shifted_warp_moves_the_pixels_and_repeats_the_edge():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, 5:] = 200
    out = warp(img, np.array([[1.0, 0, -2.0], [0, 1.0, 0]]), 10, 10)  # crop x = image x − 2
    assert (out[:, 3:] == 200).all() and (out[:, :3] == 0).all()
    out = warp(img, np.array([[1.0, 0, 5.0], [0, 1.0, 0]]), 10, 10)  # reads left of the image: edge repeated
    assert (out[:, :5] == 0).all()


@pytest.mark.parametrize("angle,scale", [(0.0, 1.0), (12.0, 0.45), (-20.0, 2.5), (5.0, 0.1)])
def test_aligned_crop_puts_the_landmarks_on_the_template(angle, scale):
    """Draw dots at the template's places in the crop, map them into a photo with a known transform,
    and align back: each dot must land within a pixel of its template place."""
    crop_to_img = np.linalg.inv(np.vstack([_transform(angle, scale, -40.0, -30.0), [0, 0, 1]]))[:2]
    pts = SPEC.points() @ crop_to_img[:, :2].T + crop_to_img[:, 2]
    size = int(max(pts.max() + 200 / scale, 300))
    img = np.zeros((size, size, 3), np.uint8)
    r = max(2, int(3 / scale))
    for x, y in pts:
        img[int(y) - r : int(y) + r + 1, int(x) - r : int(x) + r + 1] = 255
    crop, _m = aligned_crop(Image.fromarray(img), pts, SPEC)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8
    for tx, ty in SPEC.points():
        patch = crop[int(ty) - 2 : int(ty) + 3, int(tx) - 2 : int(tx) + 3]
        assert patch.max() > 100, (tx, ty)


def test_landmark_input_is_a_48_pixel_square_around_the_box():
    img = Image.new("RGB", (200, 100), (10, 20, 30))
    pixels, square = landmark_input(img, (50.0, 20.0, 110.0, 90.0))
    assert pixels.shape == (48, 48, 3)
    assert square == landmark_box((50.0, 20.0, 110.0, 90.0)) == (45, 20, 115, 90)
    pts = points_in_image(np.array([0.5] * 10), square)
    np.testing.assert_allclose(pts, [[80.0, 55.0]] * 5)


def test_region_boxes_follow_the_template_and_views_mask_the_rest():
    boxes = region_boxes(SPEC)
    assert set(boxes) == {"eyes", "nose", "mouth"}
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert boxes["eyes"][1] < boxes["nose"][1] < boxes["mouth"][1]
    px = np.full((2, 80, 80, 3), 200, np.uint8)
    views = region_views(px, boxes, np.array([1, 2, 3], np.uint8))
    assert list(views) == ["face", "eyes", "nose", "mouth"]
    x0, y0, x1, y1 = boxes["mouth"]
    m = views["mouth"]
    assert (m[:, round(y0 * 80) : round(y1 * 80), round(x0 * 80) : round(x1 * 80)] == 200).all()
    assert (m[:, 0, 0] == [1, 2, 3]).all()


def test_align_spec_round_trips_through_json():
    assert AlignSpec.from_json(SPEC.to_json()) == SPEC
