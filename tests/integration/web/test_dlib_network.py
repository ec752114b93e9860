"""The browser app on the network celebmatch ships (dlib's face ResNet on its 150-pixel chip, not
the tests' tiny graph): onnxruntime-web in Chromium, the server and Python give the same answer,
and it is the right person, for a photo that was not enrolled."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandem.apps.celebmatch.matcher import CelebMatcher
from tandem.bundle import Bundle
from tandem.testing.bundles import make_face_bundle
from tests.conftest import make_folder_dataset
from tests.integration.web.conftest import PEOPLE, WebServer, web_server_for
from tests.integration.web.test_browser_app import WAIT_MS, result

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dlib_server(tmp_path_factory, lfw_people) -> Iterator[WebServer]:
    root = tmp_path_factory.mktemp("web-dlib")
    faces = make_folder_dataset(root / "faces", lfw_people, PEOPLE, 4)  # each person's first four photos
    with web_server_for(make_face_bundle(root / "v1", faces, network="dlib"), root) as server:
        yield server


def test_device_cloud_and_python_agree_on_the_shipped_network(dlib_server, browser, lfw_people):
    photo = sorted((lfw_people / "Gerhard_Schroeder").glob("*.jpg"))[10]  # not one of the enrolled four
    expected = CelebMatcher(Bundle.load(dlib_server.bundle)).match(photo).to_json()
    assert expected["top"][0]["label"] == "Gerhard_Schroeder"
    page = browser.new_context().new_page()
    dlib_server.open(page)
    page.wait_for_function("() => document.querySelector('[data-testid=model-status]').textContent.includes('works offline')",
                           timeout=WAIT_MS)
    page.set_input_files("#file", photo)
    page.click("#both")
    page.wait_for_function("() => document.body.dataset.busy === undefined", timeout=WAIT_MS)
    assert page.text_content("[data-testid=error]") == ""
    for side in ("device", "cloud"):
        got = result(page, side)["result"]
        assert [t["label"] for t in got["top"]] == [t["label"] for t in expected["top"]]
        for a, b in zip(got["top"], expected["top"], strict=True):
            assert abs(a["similarity"] - b["similarity"]) <= 1e-4
        assert got["no_match"] == expected["no_match"] and got["sentence"] == expected["sentence"]
