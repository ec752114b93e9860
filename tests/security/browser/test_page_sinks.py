"""The browser app with hostile data in every place it shows text, in a real Chromium under the
page's real Content-Security-Policy: gallery identity names, a model name and an alias from a
link, and server error messages carrying markup all render as text; nothing runs (window.__xss
stays undefined), no element is made of them, and the page requests nothing but its own files and
the API paths listed in EXPECTED_PATHS."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlencode, urlsplit

import pytest

from tandem.apps.celebmatch.gallery import build_gallery, enroll
from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tandem.data.folder import scan_class_folders
from tandem.server.webapp import CSP, PACKAGED
from tandem.testing.bundles import make_bundle
from tests.conftest import make_folder_dataset
from tests.integration.web.conftest import web_server_for
from tests.integration.web.test_browser_app import WAIT_MS, match, model_status, result

pytestmark = [pytest.mark.integration, pytest.mark.redteam("browser")]

IMG = "<img src=x onerror=window.__xss=1>"
SCRIPT = '"><script>window.__xss=1</script>'
HOSTILE_ERROR = f"{IMG} {SCRIPT}"
# The page shows a gallery label with "_" as " " (Tony_Blair: "Tony Blair"), which would defuse
# __xss by itself: these set it without an underscore (atob("X194c3M=") is "__xss").
GALLERY_IMG = "<img src=x onerror=window[atob('X194c3M=')]=1>"
GALLERY_SCRIPT = "\"><script>window[atob('X194c3M=')]=1</script>"

# Every request the page may make, as paths on its own server: nothing else, no other origin.
EXPECTED_PATHS = [
    r"/app/",  # the page (the service worker fetches it again to cache it)
    r"/app/index\.html",  # in the service worker's precache list
    r"/app/assets/index-[\w-]+\.js",
    r"/app/assets/index-[\w-]+\.css",
    r"/app/assets/ort-wasm-simd-threaded-[\w-]+\.wasm",  # onnxruntime-web
    r"/app/assets/ort-wasm-simd-threaded-[\w-]+\.mjs",  # its glue, which its worker threads load too
    r"/app/assets/artworker-[\w-]+\.js",  # the deep-art view's inference worker (precached)
    r"/app/sw\.js",
    r"/app/favicon\.svg",
    r"/app/precache\.json",
    r"/app/vendor/opencv\.js",
    r"/app/vendor/haarcascade_frontalface_default\.xml",
    r"/v1/devices",  # the page registers once with the fleet's device key
    r"/v1/ota/check",
    r"/v1/ota/signing-keys",
    r"/v1/ota/keys",
    r"/v1/ota/files/[0-9a-f]{64}",
    r"/v1/apps/celebmatch/[^/?#]+:predict",
]
BLOB = re.compile(r"blob:(?P<origin>http://[^/]+)/[0-9a-f-]{36}")  # the photo's preview


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, lfw_people):
    """celebmatch enrolled with identities named GALLERY_IMG and GALLERY_SCRIPT. The first is a real
    folder name (anyone who can put a folder in the enrolment data can name one so); the second has
    a '/', which no folder
    name can hold, so it is the name of the second class of the catalog the gallery is built from,
    as a dataset loader that reads names from metadata (LFW's does) would give it."""
    root = tmp_path_factory.mktemp("hostile-web")
    faces = make_folder_dataset(root / "faces", lfw_people, ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"], 4)
    (faces / "Tony_Blair").rename(faces / GALLERY_IMG)
    bundle = Bundle.load(make_bundle(root / "v1", faces, seed=1))
    catalog = scan_class_folders(faces)
    catalog.classes[catalog.classes.index("Hugo_Chavez")] = GALLERY_SCRIPT
    enroll(bundle, build_gallery(OnnxModel.open(bundle), catalog, max_per_identity=4), source="hostile test")
    with web_server_for(bundle.root, root) as server:
        yield server


class Watch:
    """What a page did: every request's URL, console lines, uncaught errors."""

    def __init__(self, context, page) -> None:
        self.urls: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda r: self.urls.append(r.url))
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message) -> None:
        self.console.append(message.text)
        # Loads the browser makes by itself (a favicon) raise no request event; their failures show here.
        if message.text.startswith("Failed to load resource") and message.location.get("url"):
            self.urls.append(message.location["url"])

    def check(self, page, origin: str) -> None:
        unexpected = []
        for url in self.urls:
            blob = BLOB.fullmatch(url)
            if blob is not None:
                if blob["origin"] != origin:
                    unexpected.append(url)
                continue
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != origin or not any(
                    re.fullmatch(p, parts.path) for p in EXPECTED_PATHS):
                unexpected.append(url)
        assert not unexpected, unexpected
        assert not [c for c in self.console if "Content Security Policy" in c], self.console
        assert not self.errors, self.errors
        assert page.evaluate("() => window.__xss") is None
        # The only image is the photo's preview; every script is a file of the app's own.
        assert page.evaluate("() => [...document.images].map((i) => i.id)") in ([], ["preview"])
        scripts = page.evaluate("() => [...document.scripts].map((s) => s.src)")
        assert all(re.fullmatch(re.escape(origin) + r"/app/(assets/index-[\w-]+\.js|vendor/opencv\.js)", s)
                   for s in scripts), scripts
        for where in ("#result-device", "#result-cloud", "#error", "#model-status", "#link-settings"):
            assert page.locator(f"{where} img, {where} script, {where} iframe, {where} svg").count() == 0, where


def hostile_answer(route) -> None:
    """What a hostile or broken server (or one in the middle) might answer."""
    route.fulfill(status=400, content_type="application/json", body=json.dumps({"error": HOSTILE_ERROR}))


def test_the_built_page_has_no_inline_script_and_opencv_no_eval():
    html = (PACKAGED / "index.html").read_text()
    tags = re.findall(r"<script\b[^>]*>", html)
    assert tags and all(re.search(r'\bsrc="\./assets/index-[\w-]+\.js"', t) for t in tags), tags
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html), "an inline script"
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"
    opencv = (PACKAGED / "vendor" / "opencv.js").read_text()
    assert "new Function" not in opencv and "new_(Function" not in opencv  # web/scripts/opencv-csp.mjs


def test_gallery_names_and_server_errors_render_as_text(hostile_server, browser, lfw_people):
    photo = sorted((lfw_people / "Tony_Blair").glob("*.jpg"))[-1]
    context = browser.new_context()
    page = context.new_page()
    watch = Watch(context, page)
    try:
        response = page.goto(hostile_server.page_url())
        assert response is not None
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        page.click("#link-accept")
        model_status(page, "works offline")

        # Both sides answer with the hostile names: as text, the same on both.
        page.set_input_files("#file", photo)
        page.click("#both")
        page.wait_for_function("() => document.body.dataset.busy === undefined", timeout=WAIT_MS)
        assert page.text_content("[data-testid=error]") == ""
        for where in ("device", "cloud"):
            names = {GALLERY_IMG, GALLERY_SCRIPT, "Gerhard Schroeder"}
            assert {t["name"] for t in result(page, where)["result"]["top"]} == names
            shown = page.locator(f"#result-{where} ol.top li").all_inner_texts()
            assert sorted(re.sub(r" \d+%$", "", t) for t in shown) == sorted(names), shown

        # A server whose error message is markup: shown as text, in the error line and in Auto's note.
        page.route("**/v1/apps/**", hostile_answer)
        match(page, "cloud")
        assert page.text_content("[data-testid=error]") == f"Cloud: the server answered 400: {HOSTILE_ERROR}"
        match(page, "auto")  # device first (not tried by Auto yet), then cloud, which fails: back to device
        match(page, "auto")
        where = page.text_content("#result-device [data-testid=where]")
        assert f"Auto fell back to device (the server answered 400: {HOSTILE_ERROR})" in where

        # The same from the OTA server: the update check's error in the status line and the error line.
        page.route("**/v1/ota/check", hostile_answer)
        page.click("#settings summary")
        page.click("#forget")
        model_status(page, "cache cleared")
        match(page, "device")
        assert HOSTILE_ERROR in page.text_content("[data-testid=error]")
        assert HOSTILE_ERROR in model_status(page, "not available on this device")
        assert page.locator("[data-testid=error]").is_visible()
        watch.check(page, hostile_server.url)
        # The recorder saw the page's own traffic (the service worker's too).
        paths = {urlsplit(u).path for u in watch.urls}
        assert {"/app/", "/app/sw.js", "/app/vendor/opencv.js", "/v1/ota/check", "/v1/ota/keys",
                "/v1/apps/celebmatch/faces:predict"} <= paths, sorted(paths)
    finally:
        context.close()


def link(server, **settings: str) -> str:
    return f"{server.url}/app/#" + urlencode(settings, quote_via=quote)


def stored(page, setting: str) -> str | None:
    return page.evaluate(f"() => localStorage.getItem('tandem.{setting}')")


def test_a_hostile_link_is_shown_as_text_and_used_only_once_confirmed(hostile_server, browser, lfw_people):
    server = hostile_server
    context = browser.new_context()
    page = context.new_page()
    watch = Watch(context, page)
    try:
        page.goto(link(server, device=server.device_key, predict=server.predict_key, model=IMG, alias=SCRIPT))
        panel = page.locator("[data-testid=link-settings]")
        assert panel.is_visible()
        assert "#" not in page.url, "the fragment leaves the address bar at once"
        assert page.text_content("[data-setting=model]") == IMG
        assert page.text_content("[data-setting=alias]") == SCRIPT
        shown = panel.inner_text()
        key_id = server.predict_key.split("_")[1]
        assert f"tdm_{key_id}_… (secret hidden)" in shown
        assert server.predict_key not in shown and server.device_key not in shown
        # Nothing is used or kept yet: the stored settings are the page's defaults, nothing was asked.
        assert (stored(page, "model"), stored(page, "alias"), stored(page, "device-key")) == ("celebmatch", "production", "")
        assert not [u for u in watch.urls if "/v1/" in u]

        page.click("#link-accept")
        assert panel.is_hidden()
        assert (stored(page, "model"), stored(page, "alias")) == (IMG, SCRIPT)
        # The server refuses the model name; its message quotes it escaped, and the page shows that text.
        status = model_status(page, "not available on this device")
        assert "no model named '\\x3cimg src=x onerror=window.__xss=1\\x3e'" in status
        page.set_input_files("#file", sorted((lfw_people / "Tony_Blair").glob("*.jpg"))[-1])
        match(page, "cloud")
        assert "Cloud: the server answered 404: no model named '\\x3cimg" in page.text_content("[data-testid=error]")
        page.click("#settings summary")
        page.fill("#model", "faces")
        page.dispatch_event("#model", "change")
        match(page, "cloud")
        error = page.text_content("[data-testid=error]")
        assert "404: model faces has no alias '\"\\x3e\\x3cscript\\x3ewindow.__xss=1\\x3c/script\\x3e'" in error
        watch.check(page, server.url)
    finally:
        context.close()


def test_an_ignored_link_changes_nothing(hostile_server, browser):
    server = hostile_server
    context = browser.new_context()
    page = context.new_page()
    watch = Watch(context, page)
    try:
        page.goto(link(server, device=server.device_key, predict=server.predict_key, model=IMG))
        page.click("#link-ignore")
        assert page.locator("[data-testid=link-settings]").is_hidden()
        assert "#" not in page.url
        assert (stored(page, "model"), stored(page, "device-key"), stored(page, "predict-key")) == ("celebmatch", "", "")
        assert page.input_value("#model") == "celebmatch"
        page.reload()  # and nothing comes back: the link is gone
        assert page.locator("[data-testid=link-settings]").is_hidden()
        assert page.text_content("[data-testid=model-status]") == "model: not loaded yet"
        assert not [u for u in watch.urls if "/v1/" in u]
        watch.check(page, server.url)
    finally:
        context.close()
