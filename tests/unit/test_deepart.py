"""The deepart app's rules (media type by Accept, the size rule, which bundles it serves) and the teacher
effects' measures, without a model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tandem.apps.deepart import JPEG, MAX_SIDE, PNG, DeepArt, fitted, preferred_image_type
from tandem.bundle import Manifest, TensorSpec
from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec
from tandem.effects import EFFECTS, effect, psnr, ssim
from tandem.errors import ConfigError, ImageError

ANY = [-1, -1, -1, 3]


def manifest(**kw) -> Manifest:
    base = dict(name="art", task="image-to-image", inputs=[TensorSpec(name="pixels", dtype="uint8", shape=ANY)],
                outputs=[TensorSpec(name="image", dtype="float32", shape=ANY)],
                preprocessing=PreprocessSpec(height=64, width=64, normalize_in_graph=NormalizeSpec(
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))),
                labels=[], models={"fp32": "model.onnx"}, apps={"deepart": {"effect": "detail"}})
    return Manifest(**{**base, **kw})


@pytest.mark.parametrize(("accept", "want"), [
    ("", JPEG), ("*/*", JPEG), ("image/*", JPEG), ("image/png", PNG), ("image/jpeg", JPEG),
    ("image/jpeg;q=0.5, image/png", PNG), ("image/png;q=0.2, image/*;q=0.8", JPEG),
    ("text/html, application/json", JPEG), ("IMAGE/PNG; Q=0.9", PNG), ("image/png;q=oops, image/jpeg;q=0.1", JPEG),
])
def test_the_answer_is_jpeg_unless_accept_prefers_png(accept, want):
    assert preferred_image_type(accept) == want
    assert DeepArt().negotiate(DeepArt().options({}), accept).media_type == want


def test_big_photos_are_fitted_within_the_longest_side_and_tiny_ones_refused():
    assert fitted(Image.new("RGB", (640, 480))).size == (640, 480)
    assert fitted(Image.new("RGB", (3000, 1500))).size == (MAX_SIDE, 512)
    assert fitted(Image.new("RGB", (900, 4000))).size == (230, MAX_SIDE)
    with pytest.raises(ImageError, match="the photo is 15×300 pixels; deepart paints photos at least 16 pixels"):
        fitted(Image.new("RGB", (15, 300)))
    with pytest.raises(ImageError, match="at least 16 pixels on each side"):  # 10 wide once fitted
        fitted(Image.new("RGB", (10_240, 100)))


def test_deepart_serves_only_bundles_with_a_picture_and_an_effect():
    assert DeepArt().unsupported(manifest()) is None
    classifier = manifest(task="image-classification", outputs=[TensorSpec(name="probabilities", dtype="float32",
                                                                            shape=[-1, 3])], labels=["a", "b", "c"])
    assert DeepArt().unsupported(classifier).startswith(
        "gives no picture (task image-classification: outputs probabilities; deepart needs an 'image' output")
    assert "has no deepart effect (apps.deepart" in DeepArt().unsupported(manifest(apps={}))


def test_each_teacher_paints_an_rgb_photo_the_same_size_and_the_measures_agree_with_themselves():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for e in EFFECTS.values():
        out = e(photo)
        assert out.shape == photo.shape and out.dtype == np.uint8, e.name
    assert psnr(photo, photo) == 100.0 and ssim(photo, photo) == pytest.approx(1.0)
    noisy = np.clip(photo.astype(int) + rng.integers(-8, 9, photo.shape), 0, 255).astype(np.uint8)
    assert 25 < psnr(photo, noisy) < 40 and 0 < ssim(photo, noisy) < 1
    with pytest.raises(ConfigError, match="unknown --teacher-effect 'oil': use stylization, pencil, detail"):
        effect("oil")
