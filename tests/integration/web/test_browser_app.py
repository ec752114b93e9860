"""The browser app in a real headless Chromium: a face in, the same answer from the device (the
OTA-delivered bundle in onnxruntime-web) and the cloud (the image endpoint), then the server
stopped and the page reloaded: the on-device mode still answers from the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tandem.apps.celebmatch.matcher import CelebMatcher
from tandem.bundle import Bundle

pytestmark = pytest.mark.integration

WAIT_MS = 90_000


def result(page, where: str) -> dict:
    page.wait_for_function(f"() => document.getElementById('result-{where}').dataset.result !== undefined", timeout=WAIT_MS)
    return json.loads(page.get_attribute(f"#result-{where}", "data-result"))


def match(page, mode: str) -> None:
    page.check(f"input[name=mode][value={mode}]")
    page.click("#match")
    page.wait_for_function("() => document.body.dataset.busy === undefined", timeout=WAIT_MS)


def clear_results(page) -> None:
    page.evaluate("for (const w of ['device', 'cloud']) delete document.getElementById('result-' + w).dataset.result")


def model_status(page, contains: str) -> str:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=model-status]').textContent.includes({json.dumps(contains)})",
        timeout=WAIT_MS)
    return page.text_content("[data-testid=model-status]")


DAMAGE_CACHE = """async () => {
  const db = await new Promise((ok, fail) => { const r = indexedDB.open("tandem"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  const read = db.transaction("blobs").objectStore("blobs");
  const [keys, values] = await Promise.all(["getAllKeys", "getAll"].map((m) => new Promise((ok) => { const q = read[m](); q.onsuccess = () => ok(q.result); })));
  const tx = db.transaction("blobs", "readwrite");
  keys.forEach((k, i) => { const b = new Uint8Array(values[i]); b[b.length >> 1] ^= 0xff; tx.objectStore("blobs").put(b, k); });
  await new Promise((ok) => (tx.oncomplete = ok));
  return keys.length;
}"""


def test_a_damaged_cached_model_is_downloaded_again(web_server, browser):
    context = browser.new_context()
    page = context.new_page()
    try:
        web_server.open(page)
        model_status(page, "downloaded just now")
        assert page.evaluate(DAMAGE_CACHE) == 5  # manifest, model, gallery, landmark network, impostors
        page.reload()
        # The update check says v1 is current; opening the cache finds the damage, drops it and
        # downloads the model again instead of running a broken one.
        assert "downloaded just now" in model_status(page, "works offline")
    finally:
        context.close()


def test_a_webcam_photo_goes_through_the_same_path(web_server, browser):
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    try:
        web_server.open(page)
        model_status(page, "works offline")
        page.click("#camera")
        page.wait_for_function("() => document.getElementById('video').videoWidth > 0", timeout=WAIT_MS)
        page.click("#snap")
        page.wait_for_function("() => !document.getElementById('match').disabled", timeout=WAIT_MS)
        size = page.evaluate("(() => { const i = document.getElementById('preview'); return [i.naturalWidth, i.naturalHeight]; })()")
        assert size[0] > 0 and size[1] > 0
        # Chromium's fake camera shows a test pattern: both sides decode the PNG snapshot and find no face.
        match(page, "device")
        assert "no face found" in page.text_content("[data-testid=error]")
        match(page, "cloud")
        assert page.text_content("[data-testid=error]").startswith("Cloud: no face found in the photo")
    finally:
        context.close()


def answers(page) -> dict[str, str | None]:
    """Each side's answer as the page holds it (None: no answer shown)."""
    return {w: page.get_attribute(f"#result-{w}", "data-result") for w in ("device", "cloud")}


def test_no_answer_outlives_its_photo_or_a_failed_run(web_server, browser, lfw_people, tmp_path):
    first, second = (sorted((lfw_people / p).glob("*.jpg"))[-1] for p in ("Tony_Blair", "Hugo_Chavez"))
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("a shopping list, not a photo")
    context = browser.new_context()
    page = context.new_page()
    try:
        web_server.open(page)
        model_status(page, "works offline")
        page.set_input_files("#file", first)
        page.click("#both")
        page.wait_for_function("() => document.body.dataset.busy === undefined", timeout=WAIT_MS)
        assert result(page, "device")["result"]["top"] and result(page, "cloud")["result"]["top"]

        # Another photo: the answers about the first one go at once, before anything runs.
        page.set_input_files("#file", second)
        assert answers(page) == {"device": None, "cloud": None}
        assert page.locator(".results .empty").all_inner_texts() == ["No answer yet."] * 2
        match(page, "cloud")
        assert result(page, "cloud")["result"]["top"]

        # A run that fails on the same photo leaves no earlier answer standing in that side's card.
        page.route("**/v1/apps/**", lambda route: route.fulfill(status=503, content_type="application/json",
                                                                body='{"error": "the server is busy"}'))
        match(page, "cloud")
        assert answers(page)["cloud"] is None
        assert page.text_content("[data-testid=error]") == "Cloud: the server answered 503: the server is busy"
        page.unroute("**/v1/apps/**")

        # A file that is no photo: the error in the page's words, whichever side reads it.
        page.set_input_files("#file", not_a_photo)
        assert page.text_content("[data-testid=error]") == ""  # the last photo's error went with it
        for mode, side in (("device", "On device"), ("cloud", "Cloud")):
            match(page, mode)
            assert page.text_content("[data-testid=error]") == f"{side}: this file is not a photo we can read (JPEG or PNG)"
        assert answers(page) == {"device": None, "cloud": None}
    finally:
        context.close()


def test_both_modes_agree_and_the_device_works_offline(web_server, browser, lfw_people, artifacts, tmp_path):
    photo = sorted((lfw_people / "Tony_Blair").glob("*.jpg"))[-1]
    expected = CelebMatcher(Bundle.load(web_server.bundle)).match(photo).to_json()
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        web_server.open(page)
        status = model_status(page, "works offline")
        assert "v1" in status and "downloaded" in status
        assert "#" not in page.url, "the keys leave the address bar"

        page.set_input_files("#file", photo)
        page.click("#both")
        page.wait_for_function("() => document.body.dataset.busy === undefined", timeout=WAIT_MS)
        device, cloud = result(page, "device"), result(page, "cloud")
        assert page.text_content("[data-testid=error]") == ""
        assert device["where"] == "device" and cloud["where"] == "cloud"
        assert device["version"] == cloud["version"] == 1
        for r in (device, cloud):
            assert r["result"]["face_box"] == list(expected["face_box"])
            assert r["result"]["crop_window"] == list(expected["crop_window"])
            assert [t["label"] for t in r["result"]["top"]] == [t["label"] for t in expected["top"]]
            for got, want in zip(r["result"]["top"], expected["top"], strict=True):
                assert abs(got["similarity"] - want["similarity"]) <= 1e-4
            assert {k: v["label"] for k, v in r["result"]["parts"].items()} == \
                   {k: v["label"] for k, v in expected["parts"].items()}
            assert r["result"]["no_match"] == expected["no_match"]
            # Landmarks from ONNX Runtime Web and from ONNX Runtime agree to float precision.
            assert np.abs(np.array(r["result"]["landmarks"]) - np.array(expected["landmarks"])).max() <= 0.02
        assert device["result"]["sentence"] == cloud["result"]["sentence"] == expected["sentence"]
        assert set(device["timings"]) >= {"decode_ms", "detect_ms", "preprocess_ms", "inference_ms", "total_ms"}
        assert {"network_ms", "server_inference_ms"} <= set(cloud["timings"])
        page.screenshot(path=str(artifacts / "browser-both-modes.png"), full_page=True)

        # Auto answers from one side and says which it chose.
        match(page, "auto")
        assert "Auto chose" in page.text_content("[data-testid=where]")

        # A photo without a face: a clear error, not a wrong answer, the same from either side, naming the
        # page's own control (not the CLI's --no-detect nor HTTP's ?detect=false).
        noise = tmp_path / "noise.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(noise)
        page.set_input_files("#file", noise)
        for mode, side in (("device", "On device"), ("cloud", "Cloud")):
            match(page, mode)
            assert page.text_content("[data-testid=error]") == (
                f"{side}: no face found in the photo: use a well-lit, frontal photo where the face fills at least an "
                "eighth of the picture (or untick “find the face” for a photo that is already a cropped, aligned face)")

        # The server goes away; the page opens again from the service worker's cache and the
        # model from IndexedDB.
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        web_server.stop()
        page.reload()
        status = model_status(page, "works offline")
        assert "cache" in status and "offline" in status
        clear_results(page)
        page.set_input_files("#file", photo)
        match(page, "device")
        offline = result(page, "device")
        assert offline["result"]["sentence"] == expected["sentence"]
        assert offline["version"] == 1
        match(page, "cloud")
        assert "cannot reach the server" in page.text_content("[data-testid=error]")
        match(page, "auto")
        assert result(page, "device")["result"]["sentence"] == expected["sentence"]
        page.screenshot(path=str(artifacts / "browser-offline.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()
