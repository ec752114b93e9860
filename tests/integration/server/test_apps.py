"""Apps as plugins: ``create_app(apps=[...])`` serves an app of one's own beside Tandem's, through the
same image endpoint, and an app may answer with a picture rather than JSON."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import pytest
from PIL import Image

from tandem.apps.base import Answer, App, AppModel, Prepared, Served, Tensors
from tandem.apps.options import whole_number
from tandem.apps.registry import builtin
from tandem.bundle import Bundle, Manifest
from tandem.bundle.preprocess import decode_image, to_input
from tandem.bundle.runtime import OnnxModel
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration
JPEG = {"content-type": "image/jpeg"}


class Crop(App[int]):
    """The picture the model sees, as a PNG enlarged ``scale`` times: the shape of an image-to-image app."""

    name = "crop"
    summary = "the model's input, as a PNG"

    def unsupported(self, manifest: Manifest) -> str | None:
        return None

    def options(self, query: Mapping[str, str]) -> int:
        return whole_number(query, "scale", 1, 1, 4)

    def open(self, bundle: Bundle, model: OnnxModel, served: Served) -> AppModel[int]:
        return Cropping(model)


class Cropping(AppModel[int]):
    def __init__(self, model: OnnxModel) -> None:
        self.model = model

    def prepare(self, photo: Image.Image, options: int) -> Prepared:
        pixels = to_input(photo, self.model.spec)[None]
        return Prepared({self.model.input_name: pixels}, pixels[0])

    def answer(self, prepared: Prepared, outputs: Tensors, scale: int) -> Answer:
        assert outputs["probabilities"].shape[0] == 1  # the model ran on the prepared rows
        img = Image.fromarray(prepared.kept)
        buf = io.BytesIO()
        img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(buf, format="PNG")
        return Answer(buf.getvalue(), "image/png")


class Depth(App[None]):
    name = "depth"
    summary = "never served: no bundle here has a depth output"

    def unsupported(self, manifest: Manifest) -> str | None:
        return "has no 'depth' output: export a depth model"

    def options(self, query: Mapping[str, str]) -> None:
        return None

    def open(self, bundle: Bundle, model: OnnxModel, served: Served) -> AppModel[None]:
        raise AssertionError("an app the bundle does not support is never opened")


@pytest.fixture(scope="module")
def http(tmp_path_factory, bundles):
    settings = test_settings(tmp_path_factory.mktemp("home"))
    keys = populate(settings, list(bundles))
    with running(settings, apps=[*builtin(), Crop(), Depth()]) as server, server.client(keys.predict) as c:
        yield c


def test_an_app_of_ones_own_answers_a_picture(http, bundles, photos):
    r = http.post("/v1/apps/crop/faces:predict?version=2&scale=2", content=photos[0].read_bytes(), headers=JPEG)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-tandem-model-version"] == "2"
    assert [part.split(";")[0] for part in r.headers["server-timing"].split(", ")] == ["preprocess", "inference",
                                                                                       "score"]
    spec = Bundle.load(bundles[1]).manifest.preprocessing
    want = to_input(decode_image(photos[0]), spec).repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), want)


def test_its_options_unsupported_bundles_and_the_app_list_go_the_same_way_as_tandems(http, photos):
    r = http.post("/v1/apps/crop/faces:predict?scale=9", content=photos[0].read_bytes(), headers=JPEG)
    assert r.status_code == 400 and "query parameter scale='9': expected a whole number from 1 to 4" in r.json()["error"]
    r = http.post("/v1/apps/depth/faces:predict", content=photos[0].read_bytes(), headers=JPEG)
    assert r.status_code == 404 and r.json()["error"] == "faces v1 has no 'depth' output: export a depth model"
    r = http.post("/v1/apps/paint/faces:predict", content=photos[0].read_bytes(), headers=JPEG)
    assert r.status_code == 404 and r.json()["error"] == "unknown app 'paint'; apps: celebmatch, classify, crop, deepart, depth"
    r = http.post("/v1/apps/classify/faces:predict", content=photos[0].read_bytes(), headers=JPEG)
    assert r.status_code == 200 and r.json()["model"] == "faces" and "server-timing" not in r.headers
    params = http.get("/openapi.json").json()["paths"]["/v1/apps/{app}/{model}:predict"]["post"]["parameters"]
    assert next(p for p in params if p["name"] == "app")["schema"]["enum"] == ["celebmatch", "classify", "crop", "deepart",
                                                                                    "depth"]
