"""bench/scale.py's ``store`` part: the artifact store on a local folder against S3 (moto's server on
loopback), for bytes in and out and for OTA downloads.

    .venv/bin/python bench/scale.py --only store [--store-mb 64] [--ota-model-mb 3.6] [--rounds 2]

- ``push_mb_s`` / ``pull_mb_s``: one --store-mb MiB file of fresh random bytes stored with the store's own
  ``put_file`` (S3: hashed and ETag'd locally, HEAD, then a multipart upload of 8 MiB parts, 8 at a time, as
  `tandem push` stores a file) and read back with ``read`` (the whole object, its sha256 checked), best of
  TRANSFERS rounds interleaved across the backends; S3 also ``pull_to_cache_mb_s`` (``path``: streamed into
  the local cache and verified, what building a bundle folder does). The local folder's read comes from the
  page cache (the file was just written): it measures the store's code and hashing, not the disk. In the
  cells: a bundle with a model of the same size pushed with ``Registry.push`` (which verifies the bundle,
  then stores its files) and its folder built again from the store (``bundle_dir``, caches emptied first).
- ``ota_downloads_s``: device updates per second through one `tandem serve` worker (bench/ota_direct.py's
  ``server`` way: signed check, then the model file from the server's own route), with the registry's
  objects in a local folder and in the bucket; for S3 also ``ota_presigned_downloads_s`` (the file from the
  check's presigned URL, moto serving it), ``presigned_server_side_s`` (the check alone: what one server
  sustains when the bytes come from the bucket) and the ratios ota_direct reports. Best of --rounds.

MB/s are 10^6 bytes a second, as ota_direct's ``mb_s``; sizes are given in bytes. Targets (issue 20): S3
push and pull ≥ 50 MB/s on loopback; presigned OTA ≥ 5× the updates/s served through the server
(``ratio_server_side``: end to end, moto, a Python server on the same cores, bounds the presigned figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MB = 1e6
MIB = 1 << 20
TRANSFERS = 5  # rounds of the raw push/pull (seconds each): more than --rounds, they are cheap
TARGET_MB_S = 50.0
TARGET_PRESIGNED_RATIO = 5.0
UNIT = "MB/s with MB = 10^6 bytes (bench/ota_direct.py's mb_s); OTA: device updates (signed check + model file) /s"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def random_file(path: Path, nbytes: int) -> Path:
    """``nbytes`` of fresh random bytes: every round stores an object the store has never held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        left = nbytes
        while left > 0:
            f.write(os.urandom(min(8 * MIB, left)))
            left -= min(8 * MIB, left)
    return path


def _rate(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / MB, 1)


def transfer_cell(store: Any, path: Path) -> dict:
    """``path`` stored with ``put_file`` and read back (checked) with ``read``; then removed from the store."""
    from tandem.registry.s3 import S3Store

    size = path.stat().st_size
    load0 = _load()
    t0 = time.perf_counter()
    sha = store.put_file(path)
    t1 = time.perf_counter()
    data = store.read(sha)  # raises if the bytes are not the sha256's
    t2 = time.perf_counter()
    if len(data) != size:
        raise SystemExit(f"store: read {len(data)} bytes of {store.location} object {sha[:12]}…, stored {size}")
    del data
    cell = {"bytes": size, "push_s": round(t1 - t0, 3), "pull_s": round(t2 - t1, 3),
            "push_mb_s": _rate(size, t1 - t0), "pull_mb_s": _rate(size, t2 - t1)}
    if isinstance(store, S3Store):
        store.cache.remove(sha)
        t3 = time.perf_counter()
        store.path(sha)  # streamed into the local cache, sha256 checked
        cell["pull_to_cache_mb_s"] = _rate(size, time.perf_counter() - t3)
    store.remove(sha)
    return {**cell, "load_before": load0, "load_after": _load()}


def bundle_cell(home: Path, artifacts: dict[str, Any], bundle: Path) -> dict:
    """``bundle`` pushed into a fresh registry (Registry.push) and its folder built back from the store."""
    from tandem.bundle import Bundle
    from tandem.registry.registry import Registry
    from tandem.settings import RegistrySettings

    shutil.rmtree(home, ignore_errors=True)
    size = Bundle.load(bundle, verify=False).total_bytes
    load0 = _load()
    with Registry.open(RegistrySettings(home=home, **artifacts)) as reg:
        t0 = time.perf_counter()
        info = reg.push(bundle)
        t1 = time.perf_counter()
        for built in ("bundles", "cache"):  # nothing left from the push: every byte comes from the store
            shutil.rmtree(home / built, ignore_errors=True)
        t2 = time.perf_counter()
        reg.bundle_dir(info.name, info.version)
        t3 = time.perf_counter()
        for sha in {*info.files.values(), info.manifest_sha256}:
            reg.store.remove(sha)
    shutil.rmtree(home, ignore_errors=True)
    return {"bytes": size, "files": len(info.files), "push_s": round(t1 - t0, 3), "pull_s": round(t3 - t2, 3),
            "push_mb_s": _rate(size, t1 - t0), "pull_mb_s": _rate(size, t3 - t2),
            "load_before": load0, "load_after": _load()}


def _best(cells: list[dict], *keys: str) -> dict:
    """Each figure's best round (other work on a shared machine only slows a round down), every round's
    figures beside it, and the rounds themselves."""
    out: dict[str, Any] = {}
    for key in keys:
        figures = [c[key] for c in cells]
        out |= {key: max(figures), f"{key}_rounds": figures, f"{key}_median": round(statistics.median(figures), 1)}
    return {**out, "bytes": cells[0]["bytes"], "rounds": cells}


@contextlib.contextmanager
def _served(env: dict[str, str]) -> Iterator[str]:
    from tandem.testing.served import serve

    served = serve(env=env)
    try:
        yield served.url
    finally:
        served.stop()


def store(work: Path, *, store_mib: float, ota_model_mib: float, rounds: int, transfers: int, concurrency: int,
          duration: float, env: dict[str, str], say: Callable[[str], Any] = print) -> dict:
    """The ``store`` section of scale.json (without ``machine``, which the caller adds)."""
    from ota_direct import big_bundle, registry  # bench/, beside this script
    from ota_direct import load as updates

    from tandem.registry.artifacts import open_store
    from tandem.settings import RegistrySettings
    from tandem.testing.s3 import s3_server

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    nbytes = int(store_mib * MIB)
    # The servers get only what is set here: a TANDEM_ARTIFACTS (or database) of the caller's would mix in.
    base = {k: v for k, v in env.items() if not k.startswith("TANDEM_")}
    base |= {"TANDEM_ACCESS_LOG": "0", "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000",
             "TANDEM_PRELOAD": "0"}
    cells: dict[str, Any] = {}
    with s3_server() as s3:
        bucket = s3.new_bucket("store")
        backends = ("local", "s3")

        def artifacts(backend: str, prefix: str) -> dict[str, Any]:
            """Registry settings: objects under the home (artifacts unset), or under ``prefix`` in the bucket."""
            return {"artifacts": None} if backend == "local" else s3.settings(bucket, prefix)

        # (1) one big object through the store's API
        stores = {"local": open_store(RegistrySettings(home=work / "objects-home")),
                  "s3": open_store(RegistrySettings(home=work / "objects-home", **s3.settings(bucket, "objects")))}
        raw: dict[str, list[dict]] = {b: [] for b in backends}
        for r in range(transfers):
            for b, st in stores.items():
                say(f"[bold]store[/] {b}: put_file + read of {store_mib:g} MiB (round {r + 1}/{transfers})…")
                cell = transfer_cell(st, random_file(work / "object.bin", nbytes))
                raw[b].append(cell)
                cached = cell.get("pull_to_cache_mb_s")
                say(f"  push {cell['push_mb_s']} MB/s, pull {cell['pull_mb_s']} MB/s"
                    + (f", into the local cache {cached} MB/s" if cached is not None else ""))
        (work / "object.bin").unlink(missing_ok=True)
        cells["local_object"] = _best(raw["local"], "push_mb_s", "pull_mb_s")
        cells["s3_object"] = _best(raw["s3"], "push_mb_s", "pull_mb_s", "pull_to_cache_mb_s")

        # (2) a bundle through the registry
        bundle = big_bundle(work / "bundle", store_mib)
        pushed: dict[str, list[dict]] = {b: [] for b in backends}
        for r in range(rounds):
            for b in backends:
                say(f"[bold]store[/] {b}: Registry.push and bundle_dir of a {store_mib:g} MiB model (round "
                    f"{r + 1}/{rounds})…")
                cell = bundle_cell(work / f"registry-{b}", artifacts(b, f"bundle-{r}"), bundle)
                pushed[b].append(cell)
                say(f"  push {cell['push_mb_s']} MB/s, pull {cell['pull_mb_s']} MB/s")
        shutil.rmtree(bundle, ignore_errors=True)
        for b in backends:
            cells[f"{b}_bundle"] = {**_best(pushed[b], "push_mb_s", "pull_mb_s"), "model_bytes": nbytes}

        # (3) OTA updates through one server, objects in a folder or in the bucket
        ota_bundle = big_bundle(work / "ota-bundle", ota_model_mib)
        homes = {b: work / f"ota-{b}" for b in backends}
        keys = {b: registry(homes[b], artifacts(b, "ota"), ota_bundle) for b in backends}
        ways = {"local": ("server",), "s3": ("server", "presigned", "checks")}
        envs = {"local": {**base, "TANDEM_HOME": str(homes["local"])},
                "s3": {**base, **s3.env(bucket, "ota"), "TANDEM_HOME": str(homes["s3"]),
                       "TANDEM_OTA_DOWNLOADS": "presigned"}}
        ota: dict[str, list[dict]] = {f"{b}_{w}": [] for b in backends for w in ways[b]}
        for r in range(rounds):
            for b in backends:
                with _served(envs[b]) as url:
                    for way in ways[b]:
                        say(f"[bold]store[/] {b}: OTA updates, {way} (round {r + 1}/{rounds}, {concurrency} clients, "
                            f"{duration:g} s)…")
                        cell = asyncio.run(updates(url, keys[b], way, concurrency, duration))
                        ota[f"{b}_{way}"].append(cell)
                        say(f"  {cell['updates_s']} updates/s, {cell['mb_s']} MB/s, failed {cell['failed']}"
                            + (" [red](failures: the figure is suspect)[/]" if cell["failed"] else ""))
        for name, tries in ota.items():
            best = max(tries, key=lambda c: c["updates_s"])
            cells[f"ota_{name}"] = {**best, "rounds": [c["updates_s"] for c in tries],
                                    "model_bytes": int(ota_model_mib * MIB)}

    through = cells["ota_s3_server"]["updates_s"] or 1e-9
    presigned = cells["ota_s3_presigned"]["updates_s"]
    checks = cells["ota_s3_checks"]["updates_s"]
    s3_result = {"push_mb_s": cells["s3_object"]["push_mb_s"], "pull_mb_s": cells["s3_object"]["pull_mb_s"],
                 "ota_downloads_s": cells["ota_s3_server"]["updates_s"], "ota_presigned_downloads_s": presigned,
                 "presigned_server_side_s": checks, "ratio_server_side": round(checks / through, 2),
                 "ratio_presigned_end_to_end": round(presigned / through, 2)}
    return {
        "unit": UNIT,
        "local": {"push_mb_s": cells["local_object"]["push_mb_s"], "pull_mb_s": cells["local_object"]["pull_mb_s"],
                  "ota_downloads_s": cells["ota_local_server"]["updates_s"]},
        "s3": s3_result,
        "ota_presigned_downloads_s": presigned,
        "targets": {"s3_push_mb_s": TARGET_MB_S, "s3_pull_mb_s": TARGET_MB_S,
                    "ratio_presigned_vs_server": TARGET_PRESIGNED_RATIO},
        "meets": {"s3_push_mb_s": s3_result["push_mb_s"] >= TARGET_MB_S,
                  "s3_pull_mb_s": s3_result["pull_mb_s"] >= TARGET_MB_S,
                  "ratio_server_side": s3_result["ratio_server_side"] >= TARGET_PRESIGNED_RATIO,
                  "ratio_presigned_end_to_end": s3_result["ratio_presigned_end_to_end"] >= TARGET_PRESIGNED_RATIO},
        "object_bytes": nbytes, "ota_model_bytes": int(ota_model_mib * MIB), "transfer_rounds": transfers,
        "rounds": rounds, "concurrency": concurrency, "duration_s": duration, "server_workers": 1,
        "s3_server": "moto (Python, its own process on loopback, sharing the cores)",
        "s3_client": "obstore; multipart past 8 MiB, 8 MiB parts, 8 at a time (tandem.registry.s3)",
        "local_store": "a folder on this machine's disk (bench/work/scale/store), writes fsync'd",
        "cells": cells,
    }
