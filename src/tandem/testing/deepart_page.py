"""The browser app's deep-art view (/app/?view=deepart) driven in Chromium by Playwright: its tests and
bench/deepart.py's browser part read the same figures the page shows (``#art-stats``'s data-stats).

Chromium's fake camera (``--use-fake-device-for-media-stream``) gives the page a webcam: 20 frames/s by
default, ``=fps=60`` for a camera that does not cap the device's rate (``chromium_args``).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from playwright.sync_api import Page

# Any HTML-parsing sink the page (or a library it loads) calls is recorded in window.__sinks: the page
# builds its UI with DOM nodes only (web/src/dom.js).
SINK_TRAP = """(() => {
  const seen = (window.__sinks = []);
  const trap = (proto, prop, name) => {
    const d = Object.getOwnPropertyDescriptor(proto, prop);
    if (!d) return;
    if (d.set) Object.defineProperty(proto, prop, { ...d, set(v) { seen.push(name); return d.set.call(this, v); } });
    else if (typeof d.value === "function") {
      const f = d.value;
      Object.defineProperty(proto, prop, { ...d, value(...a) { seen.push(name); return f.apply(this, a); } });
    }
  };
  trap(Element.prototype, "innerHTML", "innerHTML");
  trap(Element.prototype, "outerHTML", "outerHTML");
  trap(Element.prototype, "insertAdjacentHTML", "insertAdjacentHTML");
  trap(ShadowRoot.prototype, "innerHTML", "shadowRoot.innerHTML");
  trap(Document.prototype, "write", "document.write");
  trap(Document.prototype, "writeln", "document.writeln");
  trap(Range.prototype, "createContextualFragment", "createContextualFragment");
  trap(DOMParser.prototype, "parseFromString", "DOMParser.parseFromString");
  trap(HTMLIFrameElement.prototype, "srcdoc", "iframe.srcdoc");
})();"""


def chromium_args(camera_fps: int | None = None) -> list[str]:
    """Headless Chromium's flags for the page: no sandbox (CI runs as root), a fake camera allowed
    without asking, at ``camera_fps`` frames/s (Chromium's default, 20, when None)."""
    fake = "--use-fake-device-for-media-stream" + (f"=fps={camera_fps}" if camera_fps else "")
    return ["--no-sandbox", fake, "--use-fake-ui-for-media-stream"]


def view_url(server_url: str, device_key: str, predict_key: str, effects: list[str], alias: str = "production") -> str:
    """The deep-art view with its settings offered in the link's fragment (the page asks before using them)."""
    fragment = urlencode({"device": device_key, "predict": predict_key, "effects": ",".join(effects), "alias": alias},
                         quote_via=quote)
    return f"{server_url}/app/?view=deepart#{fragment}"


class ArtPage:
    def __init__(self, page: Page, timeout_ms: int = 90_000) -> None:
        self.page = page
        self.timeout_ms = timeout_ms

    def open(self, url: str) -> None:
        """Open ``url`` (view_url) and accept the link's settings, as a user would."""
        self.page.goto(url)
        self.page.click("#link-accept")

    def status(self, contains: str) -> str:
        """The effect's status line once it holds ``contains``."""
        self.page.wait_for_function(
            f"() => document.getElementById('art-status').textContent.includes({json.dumps(contains)})",
            timeout=self.timeout_ms)
        return self.page.text_content("#art-status") or ""

    def stats(self) -> dict[str, Any]:
        """The figures the page shows, as it keeps them (refreshed four times a second)."""
        raw = self.page.get_attribute("#art-stats", "data-stats")
        return json.loads(raw) if raw else {}

    def wait(self, condition: str) -> dict[str, Any]:
        """Stats once the JavaScript ``condition`` on them (a variable ``s``) holds."""
        # Written into the predicate, not eval'd in the page: the page's CSP forbids eval.
        self.page.wait_for_function(
            "() => { const raw = document.getElementById('art-stats').dataset.stats;"
            f" if (!raw) return false; const s = JSON.parse(raw); return Boolean({condition}); }}",
            timeout=self.timeout_ms)
        return self.stats()

    def start(self) -> None:
        self.page.click("#art-start")
        self.page.wait_for_function("() => document.body.dataset.artRunning === '1'", timeout=self.timeout_ms)

    def stop(self) -> None:
        self.page.click("#art-start")

    def resolution(self, key: str) -> None:
        self.page.select_option("#art-resolution", key)

    def side(self, side: str, on: bool) -> None:
        """Tick or untick "paint on this device" (``device``) or "compare with the cloud" (``cloud``)."""
        self.page.set_checked(f"#art-{side}", on)

    def measure(self, side: str, seconds: float, resolution: str) -> dict[str, Any]:
        """``side``'s frames per second and mean ms a frame, over ``seconds`` of frames at ``resolution``
        after a second to settle: frames counted by the page, time by this clock."""
        w = resolution.split("x", maxsplit=1)[0]
        self.wait(f"s.{side}.last && s.{side}.last.width === {w} && s.{side}.frames > 0")
        time.sleep(1.0)
        first = self.stats()[side]
        t0 = time.perf_counter()
        time.sleep(seconds)
        last = self.stats()[side]
        elapsed = time.perf_counter() - t0
        return {"fps": (last["frames"] - first["frames"]) / elapsed, "frame_ms": last["frame_ms"], "last": last["last"],
                "projected": last.get("projected")}

    def canvas_rgb(self, canvas_id: str) -> np.ndarray:
        """A canvas's pixels: H×W×3 uint8."""
        width, height, b64 = self.page.evaluate(
            "(id) => { const c = document.getElementById(id); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let s = ''; for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));"
            " return [c.width, c.height, btoa(s)]; }",
            canvas_id)
        rgba = np.frombuffer(base64.b64decode(b64), np.uint8).reshape(height, width, 4)
        return rgba[..., :3].copy()
