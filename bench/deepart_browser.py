"""Deep art in the browser (issue 18): the live page's frame rates, for bench/deepart.py --browser.

    .venv/bin/python bench/deepart_browser.py BUNDLE_DIR [--seconds 5] [--out FILE]

A real `tandem serve` (its own TANDEM_HOME under bench/work) with the bundle pushed, aliased production
and released over the air; Debian's Chromium (Playwright) opens the browser app's deep-art view, which
gets the effect over the air and paints Chromium's fake camera (60 frames/s, so the camera does not cap
the rate) with onnxruntime-web (WASM; two threads when the page is cross-origin isolated).

- device_fps {"320x240", "640x480"}: frames painted on the device per second over --seconds, the cloud
  comparison off, on the page's default WASM threads (two when it is cross-origin isolated on a machine of
  two cores or more); device_frame_ms: the page's mean time a frame (grab, inference in the worker, draw);
  device_fps_by_threads and device_frame_ms_by_threads {"1": {...}, "2": {...}}: each thread count the
  page's picker offers.
- cloud_fps and cloud_frame_ms {profile: ...}: the same frames (JPEG) painted by the server at 320x240,
  the device side off, one frame in flight. "loopback" is measured (this machine's server, so the
  server's inference shares the two cores with Chromium); every other profile is projected from it with
  tandem.advisor.networks.transfer (the profile's RTT, the frame's bytes over its bandwidths, its loss
  penalty) added to the loopback frame time, as the page projects it. Nothing is delayed on the wire.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tandem.advisor.networks import NETWORKS, transfer
from tandem.bundle import Bundle
from tandem.testing.deepart_page import ArtPage, chromium_args, view_url
from tandem.testing.served import serve

HERE = Path(__file__).resolve().parent
RESOLUTIONS = ("320x240", "640x480")
CLOUD_RESOLUTION = "320x240"
CAMERA_FPS = 60


def _tandem(env: dict[str, str], *args: object) -> Any:
    proc = subprocess.run([sys.executable, "-m", "tandem", *map(str, args), "--json"], env=env, check=False,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tandem {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def browser_figures(bundle_dir: Path, work: Path, seconds: float = 5.0) -> dict[str, Any]:
    """device_fps, device_frame_ms, cloud_fps, cloud_frame_ms (and how they were measured) for the bundle."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is not installed: run `make install` (it runs apt-get install chromium)")
    name = Bundle.load(bundle_dir).manifest.name
    home = work / "browser-home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_REDIS_URL": ""}
    for var in ("TANDEM_OTA_MASTER_KEY", "TANDEM_WEB_DIR", "TANDEM_OTA_SHARED_KEY_UPDATES"):
        env.pop(var, None)
    _tandem(env, "push", bundle_dir)
    _tandem(env, "alias", name, "production", 1)
    _tandem(env, "release", name, 1, "--channel", "production")
    device_key = _tandem(env, "keys", "create", "--scope", "device", "--label", "bench")["key"]
    predict_key = _tandem(env, "keys", "create", "--scope", "predict", "--label", "bench")["key"]
    served = serve(env=env)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=chromium_args(CAMERA_FPS))
            try:
                page = browser.new_context(permissions=["camera"]).new_page()
                art = ArtPage(page)
                art.open(view_url(served.url, device_key, predict_key, [name]))
                status = art.status("works offline")
                default_threads = int(page.input_value("#art-threads"))
                offered = page.eval_on_selector_all("#art-threads option", "(os) => os.map((o) => o.value)")
                art.side("cloud", False)
                art.start()
                device: dict[str, dict[str, dict[str, Any]]] = {}
                for threads in offered:
                    page.select_option("#art-threads", threads)
                    art.status(f"on {threads} WASM thread")
                    device[threads] = {}
                    for res in RESOLUTIONS:
                        art.resolution(res)
                        device[threads][res] = art.measure("device", seconds, res)
                art.resolution(CLOUD_RESOLUTION)
                art.side("device", False)
                art.side("cloud", True)
                cloud = art.measure("cloud", seconds, CLOUD_RESOLUTION)
                art.stop()
            finally:
                browser.close()
    finally:
        served.stop()
    frame_ms = cloud["frame_ms"]
    up, down = cloud["last"]["up_bytes"], cloud["last"]["down_bytes"]
    projected = {n: frame_ms + transfer(p, up, down).total_ms for n, p in NETWORKS.items() if p.online}
    fps = {t: {r: round(m["fps"], 1) for r, m in by_res.items()} for t, by_res in device.items()}
    ms = {t: {r: round(m["frame_ms"], 1) for r, m in by_res.items()} for t, by_res in device.items()}
    return {
        "device_fps": fps[str(default_threads)],
        "device_frame_ms": ms[str(default_threads)],
        "device_fps_by_threads": fps,
        "device_frame_ms_by_threads": ms,
        "cloud_fps": {"loopback": round(cloud["fps"], 1), **{n: round(1000 / ms, 2) for n, ms in projected.items()}},
        "cloud_frame_ms": {"loopback": round(frame_ms, 1), **{n: round(ms, 1) for n, ms in projected.items()}},
        "browser": {"chromium": subprocess.run([chromium, "--version"], check=False, capture_output=True,
                                                text=True).stdout.strip(),
                    "wasm_threads": default_threads, "camera_fps": CAMERA_FPS, "seconds": seconds,
                    "cloud_resolution": CLOUD_RESOLUTION, "cloud_bytes": {"up": up, "down": down},
                    "cloud_server_inference_ms": cloud["last"].get("server_inference_ms"),
                    "projected": sorted(projected), "status": status},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, help="write the figures here as JSON (default: print them)")
    args = ap.parse_args()
    figures = browser_figures(args.bundle, HERE / "work" / "deepart", args.seconds)
    text = json.dumps(figures, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
