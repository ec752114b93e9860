"""The page's JavaScript preprocessing and face finder against the Python code the server runs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tandem.bundle import Bundle
from tandem.bundle.preprocess import CropSpec, decode_image, to_input
from tandem.faces.finder import FaceFinder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def page(web_server, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{web_server.url}/app/")
    page.wait_for_function("() => window.tandem !== undefined")
    yield page
    context.close()


def js_input(page, data: bytes, spec, box) -> np.ndarray:
    flat = page.evaluate("([b, s, box]) => window.tandem.preprocess(b, s, box)", [list(data), spec.model_dump(mode="json"), box])
    return np.array(flat, np.uint8).reshape(spec.height, spec.width, 3)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def photos(lfw_people: Path) -> list[Path]:
    return [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in ("Tony_Blair", "Hugo_Chavez", "Donald_Rumsfeld", "Serena_Williams")]


def test_same_tensor_as_python(page, web_server, lfw_people):
    spec = Bundle.load(web_server.bundle).manifest.preprocessing
    lfw_box = spec.model_copy(update={"crop": CropSpec(mode="box", box=(0.28, 0.24, 0.72, 0.82))})
    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)
    cases = []
    for p in photos(lfw_people):
        data = p.read_bytes()
        cases += [(p.name, data, spec, None), (p.name + " box", data, lfw_box, None),
                  (p.name + " window", data, spec, [-20, 30, 180, 290])]
        img = decode_image(data)
        cases.append((p.name + " as png", png(np.asarray(img)), spec, [40, 50, 211, 240]))
    cases += [("noise png", png(noisy), spec, None), ("noise png upscaled", png(noisy[:40, :30]), spec, None)]
    worst = {}
    for name, data, s, box in cases:
        py = to_input(decode_image(data), s, tuple(box) if box else None)
        js = js_input(page, data, s, box)
        worst[name] = int(np.abs(py.astype(int) - js.astype(int)).max())
    print(worst)
    assert all(v == 0 for v in worst.values()), worst


def test_same_faces_as_python(page, lfw_people):
    finder = FaceFinder()
    imgs = [p.read_bytes() for p in photos(lfw_people)]
    big = decode_image(imgs[0]).resize((1000, 1000), Image.Resampling.BICUBIC)  # exercises the detection downscale
    imgs.append(png(np.asarray(big)))
    # A face on a large plain background (found as the photo is) and a dark face (found only once
    # the histogram is equalised): both of the finder's passes, the same on each side.
    canvas = Image.new("RGB", (1800, 1200), (90, 120, 150))
    canvas.paste(big, (650, 120))
    imgs.append(png(np.asarray(canvas)))
    imgs.append(png((np.asarray(decode_image(imgs[1]), np.float32) * 0.3).astype(np.uint8)))
    # Tilted faces, found only in the finder's turned views (both ways): the same boxes on each side.
    for angle in (20, -20):
        tilted = Image.new("RGB", (1600, 1200), (90, 120, 150))
        tilted.paste(big.resize((800, 800)).rotate(angle, expand=True, fillcolor=(200, 200, 190)), (300, 80))
        imgs.append(png(np.asarray(tilted)))
    for data in imgs:
        py = [(f.x, f.y, f.w, f.h) for f in finder.find(decode_image(data))]
        js = [(b["x"], b["y"], b["w"], b["h"]) for b in page.evaluate("(b) => window.tandem.findFaces(b)", list(data))]
        assert py, "Python finds a face in every LFW photo"
        assert js == py


def test_same_alignment_as_python(page, lfw_people):
    """The landmark network's input and the aligned crop, given the same landmarks, byte for byte."""
    from tandem.faces.align import AlignSpec, aligned_crop, landmark_input

    spec = AlignSpec.square(48)
    js_spec = {"height": spec.height, "width": spec.width, "template": [list(p) for p in spec.template]}
    for path in photos(lfw_people):
        data = path.read_bytes()
        img = decode_image(data)
        box = (67.3, 66.8, 183.1, 184.9)
        py_in, square = landmark_input(img, box)
        js = page.evaluate("([b, box]) => window.tandem.landmarkInput(b, box)", [list(data), list(box)])
        assert tuple(js["square"]) == square
        assert np.array_equal(np.array(js["pixels"], np.uint8).reshape(48, 48, 3), py_in)
        rng = np.random.default_rng(len(data))
        base = np.array([[105.0, 115.0], [145.0, 113.0], [126.0, 140.0], [108.0, 160.0], [142.0, 159.0]])
        for scale in (1.0, 0.3, 2.2):  # shrinking (resize first), plain, enlarging
            pts = 125 + (base - 125) * scale + rng.normal(0, 1.5, base.shape)
            py = aligned_crop(img, pts, spec)[0]
            got = page.evaluate("([b, p, s]) => window.tandem.align(b, p, s)", [list(data), pts.tolist(), js_spec])
            assert np.array_equal(np.array(got, np.uint8).reshape(48, 48, 3), py), (path.name, scale)


def test_a_48_megapixel_photo_is_read_reduced_as_python_reads_it(page, web_server):
    """An 8000×6000 phone photo is read at half its sides on both sides (JPEG draft in Python, a scaled
    draw in the page): the model inputs agree to within the two resamplings' difference."""
    from tandem.bundle.preprocess import MAX_IMAGE_PIXELS

    yy, xx = np.mgrid[0:6000, 0:8000]
    arr = np.stack([xx * 255 // 8000, yy * 255 // 6000, (xx + yy) * 255 // 14000], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    assert MAX_IMAGE_PIXELS < 8000 * 6000
    spec = Bundle.load(web_server.bundle).manifest.preprocessing
    py = to_input(decode_image(data), spec).astype(int)
    js = js_input(page, data, spec, None).astype(int)
    assert np.abs(py - js).mean() < 2 and np.abs(py - js).max() <= 12
