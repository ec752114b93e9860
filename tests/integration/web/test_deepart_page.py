"""The browser app's deep-art view in a real headless Chromium: Chromium's fake camera painted live on
the device by an effect delivered over the air (a 1-epoch stylize run at 64 px, trained here), a frame
counter, and the same frames painted by the real server for comparison, with their projection onto the
advisor's network profiles. The effect is OpenCV's pencil sketch, learned in a few seconds (8 epochs of 7
photos at 64 px): a network that starts as the identity needs that much to change the camera's picture
visibly (1 epoch leaves it unchanged)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from tandem.advisor.networks import NETWORKS, transfer
from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tandem.export.exporter import ExportOptions, export_run
from tandem.testing.deepart_page import SINK_TRAP, ArtPage, view_url
from tandem.training.stylize import StylizeConfig, train_stylize
from tests.integration.web.conftest import WebServer, web_server_for

pytestmark = pytest.mark.integration

EFFECT = "art-pencil"


@pytest.fixture(scope="module")
def art_server(tmp_path_factory, lfw_people) -> Iterator[WebServer]:
    root = tmp_path_factory.mktemp("web-art")
    photos = root / "photos"
    photos.mkdir()
    for person in ("Tony_Blair", "Hugo_Chavez"):
        for src in sorted((lfw_people / person).glob("*.jpg"))[:4]:
            shutil.copy(src, photos / src.name)
    cfg = StylizeConfig(data=str(photos), out=root / "run", effect="pencil", epochs=8, photo_size=64, crop=32,
                        batch_size=4)
    train_stylize(cfg, show_progress=False)
    bundle = export_run(root / "run", root / "bundle", ExportOptions(name=EFFECT))
    with web_server_for(bundle.root, root, name=EFFECT) as server:
        yield server


def _spread(pixels: np.ndarray) -> float:
    return float(pixels.astype(np.float64).std())


def test_the_webcam_is_painted_on_the_device_and_by_the_cloud(art_server, browser, artifacts):
    context = browser.new_context(permissions=["camera"], viewport={"width": 1200, "height": 900})
    context.add_init_script(SINK_TRAP)
    page = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: console.append(m.text))
    art = ArtPage(page)
    try:
        response = page.goto(view_url(art_server.url, art_server.device_key, art_server.predict_key, [EFFECT, "no-such-effect"]))
        assert response is not None
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert response.headers["cross-origin-embedder-policy"] == "require-corp"
        page.click("#link-accept")
        assert page.title() == "Tandem · deep art" and "?view=deepart" in page.url and "#" not in page.url
        assert page.locator("#art-effect option").all_inner_texts() == [EFFECT, "no-such-effect"]
        status = art.status("works offline")
        assert f"({EFFECT} v1, downloaded just now)" in status and "effect: pencil" in status
        # Cross-origin isolated: SharedArrayBuffer, and onnxruntime-web on two threads (this machine's two cores).
        assert page.evaluate("() => crossOriginIsolated") is True
        threads = min(2, page.evaluate("() => navigator.hardwareConcurrency"))
        assert f"on {threads} WASM thread" in status

        art.start()
        s = art.wait("s.device.frames >= 5")
        assert s["effect"] == EFFECT and s["version"] == 1 and s["threads"] == threads and s["resolution"] == "320x240"
        assert s["device"]["fps"] > 0 and s["device"]["frame_ms"] > 0
        assert s["device"]["last"]["width"] == 320 and s["device"]["last"]["height"] == 240
        assert page.text_content("[data-testid=device-fps]").endswith(" a frame")
        assert " fps" in page.text_content("[data-testid=device-fps]") and "– fps" not in page.text_content("[data-testid=device-fps]")
        camera, painted = art.canvas_rgb("art-input"), art.canvas_rgb("art-device-out")
        assert camera.shape == painted.shape == (240, 320, 3)
        assert _spread(camera) > 10 and _spread(painted) > 10, "a blank canvas"
        assert np.abs(camera.astype(int) - painted.astype(int)).mean() > 5, "the painted frame is the camera's"

        # The page paints as ONNX Runtime does on the server: the same rounded pixels (±1 for float rounding).
        frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        got = page.evaluate("([b, w, h]) => window.tandem.paint(b, w, h)", [base64.b64encode(frame.tobytes()).decode(), 64, 48])
        got = np.frombuffer(base64.b64decode(got), np.uint8).reshape(48, 64, 3)
        want = OnnxModel.open(Bundle.load(art_server.bundle)).infer({"pixels": frame[None]})["image"][0]
        assert np.abs(got.astype(int) - np.rint(np.clip(want, 0, 255)).astype(int)).max() <= 1

        # The same frames to the cloud: its pictures come back, with its rate and their projection.
        art.side("cloud", True)
        s = art.wait("s.cloud.frames >= 3 && s.cloud.projected")
        cloud = s["cloud"]
        assert cloud["fps"] > 0 and cloud["last"]["version"] == 1
        assert cloud["last"]["up_bytes"] > 0 and cloud["last"]["down_bytes"] > 0 and cloud["last"]["round_trip_ms"] > 0
        assert _spread(art.canvas_rgb("art-cloud-out")) > 10
        assert set(cloud["projected"]) == {n for n, p in NETWORKS.items() if p.online}
        for name, p in cloud["projected"].items():
            # The page's projection is the advisor's formula on the figures it measured.
            want_ms = cloud["frame_ms"] + transfer(NETWORKS[name], cloud["last"]["up_bytes"], cloud["last"]["down_bytes"]).total_ms
            assert p["frame_ms"] == pytest.approx(want_ms, rel=1e-6) and p["fps"] == pytest.approx(1000 / want_ms, rel=1e-6)
        assert page.locator("#art-projection-rows tr[data-profile]").count() == len(cloud["projected"])
        assert "projected" in page.text_content("table.projection caption")
        page.screenshot(path=str(artifacts / "browser-deepart.png"), full_page=True)

        # 640×480: the frames that follow are painted at that size on both sides.
        art.resolution("640x480")
        s = art.wait("s.device.last.width === 640 && s.cloud.last.width === 640")
        assert s["device"]["last"]["height"] == 480 and s["resolution"] == "640x480"

        # One WASM thread: the effect opens again in a worker of its own, and painting goes on.
        page.select_option("#art-threads", "1")
        art.status("on 1 WASM thread")
        frames = art.stats()["device"]["frames"]
        s = art.wait(f"s.threads === 1 && s.device.frames > {frames + 3}")
        assert s["device"]["last"]["width"] == 640

        # An effect the server does not release to this device: said, and the camera keeps running.
        page.select_option("#art-effect", "no-such-effect")
        status = art.status("effect no-such-effect: not available on this device")
        assert "no-such-effect" in page.text_content("[data-testid=art-error]")
        art.stop()
        assert page.evaluate("() => document.body.dataset.artRunning") is None

        assert page.evaluate("() => window.__sinks") == [], "an HTML-parsing sink was used"
        assert not errors, errors
        assert not [c for c in console if "Content Security Policy" in c], console
    finally:
        context.close()

