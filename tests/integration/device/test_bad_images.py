"""Photos that cannot be used: one without a face, one too large to decode. Each is a clear
ImageError on the device and a 4xx with {"error": ...} from the server, never a 500."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tandem.apps.celebmatch.matcher import CelebMatcher
from tandem.bundle import Bundle
from tandem.bundle.preprocess import MAX_IMAGE_PIXELS
from tandem.device.cloud_client import CloudClient
from tandem.device.hybrid import HybridModel
from tandem.errors import ImageError, NoFaceFound

pytestmark = pytest.mark.integration


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def no_face() -> bytes:
    """A smooth colour gradient with a little noise: photo-like, and nothing like a face."""
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([x * 255 / 319, y * 255 / 239, np.full_like(x, 128.0)], axis=-1)
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    return png(Image.fromarray(rgb.clip(0, 255).astype(np.uint8)))


@pytest.fixture(scope="module")
def huge() -> bytes:
    """8000×6000 pixels (over MAX_IMAGE_PIXELS) in a few kB: one bit per pixel, all zero."""
    data = png(Image.new("1", (8000, 6000)))
    assert MAX_IMAGE_PIXELS < 8000 * 6000 and len(data) < 100_000
    return data


def test_celebmatch_finds_no_face_in_a_gradient(device_bundle: Path) -> None:
    matcher = CelebMatcher(Bundle.load(device_bundle))
    with pytest.raises(NoFaceFound, match="no face found in the photo"):
        matcher.match(no_face())
    assert len(matcher.match(no_face(), detect=False).top) == 3  # without detection: the manifest's crop


def test_hybrid_model_uses_the_manifest_crop_so_a_faceless_photo_still_gets_an_answer(
        server, device_bundle: Path) -> None:
    srv, keys = server
    with CloudClient(srv.url, "faces", api_key=keys.predict) as cloud:
        hm = HybridModel(device_bundle, cloud)
        dev = hm.predict(no_face(), policy="only_device")
        cl = hm.predict(no_face(), policy="only_cloud")
    assert np.abs(dev.probabilities - cl.probabilities).max() <= 1e-4


def test_a_huge_image_is_an_image_error_on_either_side(server, device_bundle: Path, huge: bytes) -> None:
    srv, keys = server
    with CloudClient(srv.url, "faces", api_key=keys.predict) as cloud:
        hm = HybridModel(device_bundle, cloud)
        for policy in ("only_device", "only_cloud", "prefer_cloud"):  # decoded on the device, before either side
            with pytest.raises(ImageError, match="image too large"):
                hm.predict(huge, policy=policy)  # type: ignore[arg-type]
        with pytest.raises(ImageError, match="image too large"):
            CelebMatcher(Bundle.load(device_bundle)).match(huge)


@pytest.mark.parametrize(("app", "photo", "status", "text"), [
    ("celebmatch", "no_face", 422, "no face found in the photo"),
    ("celebmatch", "huge", 400, "over 40,000,000 pixels); send a smaller photo"),
    ("classify", "huge", 400, "over 40,000,000 pixels); send a smaller photo"),
])
def test_the_image_endpoint_answers_bad_photos_with_a_clear_4xx(server, huge: bytes, app: str, photo: str,
                                                                 status: int, text: str) -> None:
    srv, keys = server
    body = huge if photo == "huge" else no_face()
    r = httpx.post(f"{srv.url}/v1/apps/{app}/faces:predict", content=body, timeout=30,
                   headers={"content-type": "image/png", "authorization": f"Bearer {keys.predict}"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and text in r.json()["error"]
