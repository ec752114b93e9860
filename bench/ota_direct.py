"""OTA downloads per second one Tandem server sustains: bytes streamed through it, or sent from the bucket
(presigned URLs) or a CDN while it only answers checks (docs/ota.md, "Downloads from storage or a CDN").

    .venv/bin/python bench/ota_direct.py [--quick] [--model-mb 3.6] [--concurrency 16] [--duration 10] [--cdn]

One real `tandem serve` (one uvicorn worker) over a registry whose artifacts are in a bucket of moto's S3
server (its own process on loopback), TANDEM_OTA_DOWNLOADS=presigned; a bundle whose model file is
--model-mb MB (the celebmatch bundle's is 3.6 MB), released. A closed-loop load (--concurrency clients,
asyncio + httpx, keep-alive) runs one device update after another: ``POST /v1/ota/check`` (schema 2, a
fresh device id each time, so every answer is signed anew), then the model file, whole:

- ``server``: from the server's own route ``/v1/ota/files/…`` (the server streams it from the bucket);
- ``presigned``: from the payload's presigned URL, straight from the bucket; the server signed the check;
- ``checks``: the check alone: what the server does per update when the bytes go elsewhere, so the rate
  one server sustains that way, whatever the bucket's own speed (moto is a Python server too);
- ``cdn`` (--cdn): a second server with TANDEM_OTA_DOWNLOADS=cdn, the model file from a static file server
  over the folder it publishes to (a CDN's stand-in; Python's http.server, so no CDN's speed either).

Writes bench/results/ota_direct.json. The load, the server, moto and the static server share this machine's
cores: ``cores`` and the load average say how many there were.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import numpy_helper

from tandem.bundle import Bundle, write_manifest
from tandem.registry.ota import Ota
from tandem.registry.registry import Registry
from tandem.settings import Settings
from tandem.testing.bundles import make_bundle
from tandem.testing.s3 import s3_server
from tandem.testing.served import serve
from tandem.testing.static import static_server

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work" / "ota-direct"


def big_bundle(root: Path, model_mb: float) -> Path:
    """The tiny test bundle with ``model_mb`` MB of extra (unused) weights in its model: a real-sized download."""
    bundle = make_bundle(root, None, name="faces", seed=1)
    model = onnx.load(str(bundle / "model.onnx"))
    pad = np.random.default_rng(0).normal(size=int(model_mb * (1 << 20)) // 4).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(pad, "padding"))
    onnx.save(model, str(bundle / "model.onnx"))
    write_manifest(bundle, Bundle.load(bundle, verify=False).manifest)
    return bundle


def registry(home: Path, artifacts: dict[str, str], bundle: Path) -> str:
    """Push and release ``bundle``; an admin key (it may check for any device id)."""
    settings = Settings(home=home, database_url=None, ota_master_key=None, **artifacts)  # type: ignore[arg-type]
    with Registry.open(settings.registry) as reg:
        reg.push(bundle)
        Ota(reg, settings.ota).releases.release("faces", 1)
        return reg.create_key("admin", "bench")[0]


async def load(url: str, key: str, way: str, concurrency: int, duration: float) -> dict:
    """Updates (check, then the model file, unless ``way`` is checks) completed per second."""
    done, failed, moved, n = 0, 0, 0, 0
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as server, \
            httpx.AsyncClient(timeout=60, limits=limits) as direct:
        stop = time.perf_counter() + duration

        async def device() -> None:
            nonlocal done, failed, moved, n
            while time.perf_counter() < stop:
                n += 1
                try:
                    r = await server.post("/v1/ota/check", json={"model": "faces", "device_id": f"bench-{n}",
                                                                 "schema": 2, "platform": "android"})
                    entry = json.loads(base64.b64decode(r.json()["payload"]))["files"]["model.onnx"]
                    size = entry["encrypted"]["size"]
                    if way == "checks":
                        done += 1
                        continue
                    if way == "server":
                        body = await server.get(entry["url"])
                    else:
                        body = await direct.get(entry["mirrors"][0])
                    if body.status_code == 200 and len(body.content) == size:
                        done, moved = done + 1, moved + size
                    else:
                        failed += 1
                except (httpx.HTTPError, KeyError, ValueError):
                    failed += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(device() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return {"updates_s": round(done / seconds, 1), "completed": done, "failed": failed, "seconds": round(seconds, 2),
            "mb_s": round(moved / seconds / 1e6, 1), "load_avg": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 MB model, 4 clients, 2 s per cell")
    p.add_argument("--model-mb", type=float, default=3.6)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--cdn", action="store_true", help="also the cdn mode (a second server)")
    args = p.parse_args()
    if args.quick:
        args.model_mb, args.concurrency, args.duration = 1.0, 4, 2.0
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    bundle = big_bundle(WORK / "bundle", args.model_mb)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    result: dict = {"model_mb": args.model_mb, "concurrency": args.concurrency, "duration_s": args.duration,
                    "cores": len(os.sched_getaffinity(0)), "workers": 1, "cells": {}}
    with s3_server() as s3:
        bucket = s3.new_bucket()
        home = WORK / "home"
        key = registry(home, s3.settings(bucket), bundle)
        env = {**base_env, **s3.env(bucket), "TANDEM_HOME": str(home),
               "TANDEM_ACCESS_LOG": "0", "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000",
               "TANDEM_OTA_DOWNLOADS": "presigned", "TANDEM_PRELOAD": "0"}
        served = serve(env=env)
        try:
            for way in ("server", "presigned", "checks"):
                cell = asyncio.run(load(served.url, key, way, args.concurrency, args.duration))
                result["cells"][way] = cell
                print(f"{way:>10}: {cell['updates_s']:8.1f} updates/s  {cell['mb_s']:7.1f} MB/s  "
                      f"failed {cell['failed']}", flush=True)
        finally:
            served.stop()
        if args.cdn:
            public = WORK / "public"
            with static_server(public) as cdn:
                served = serve(env={**env, "TANDEM_OTA_DOWNLOADS": "cdn", "TANDEM_OTA_DOWNLOAD_BASE": cdn.url,
                                    "TANDEM_OTA_PUBLISH": str(public)})
                try:
                    time.sleep(2)  # the release's objects are published in the background at start-up
                    cell = asyncio.run(load(served.url, key, "cdn", args.concurrency, args.duration))
                    result["cells"]["cdn"] = cell
                    print(f"{'cdn':>10}: {cell['updates_s']:8.1f} updates/s  {cell['mb_s']:7.1f} MB/s  "
                          f"failed {cell['failed']}", flush=True)
                finally:
                    served.stop()
    cells = result["cells"]
    through = cells["server"]["updates_s"] or 1e-9
    result["ota_downloads_s"] = cells["server"]["updates_s"]
    result["ota_presigned_downloads_s"] = cells["presigned"]["updates_s"]
    result["presigned_server_side_s"] = cells["checks"]["updates_s"]
    result["ratio_presigned_end_to_end"] = round(cells["presigned"]["updates_s"] / through, 2)
    result["ratio_server_side"] = round(cells["checks"]["updates_s"] / through, 2)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("ota_direct-quick.json" if args.quick else "ota_direct.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")
    sys.exit(0 if all(c["failed"] == 0 for c in cells.values()) else 1)


if __name__ == "__main__":
    main()
