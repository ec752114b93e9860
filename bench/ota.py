"""Over-the-air delivery: bytes a device downloads for a first install and for three kinds of
update (full file vs delta), the time to install, and manifest checks per second.

    make bench-ota        (or: .venv/bin/python bench/ota.py [--small] [--duration 10])

Everything goes through a real `tandem serve` (its own TANDEM_HOME under bench/work/ota) and a real
`tandem.device.ModelUpdater`. One device walks through four released versions of celebmatch:

  v1 (a) first install: the exported model (fp32), its gallery and manifest, all downloaded
  v2 (b) the classifier head fine-tuned for two epochs on frozen embeddings, re-exported
  v3 (c) the gallery re-enrolled with more identities (people with >= 15 photos instead of 20)
  v4 (d) a full retraining (another seed), exported and enrolled anew

The runs come from bench/work/accuracy (make bench-accuracy) when they are there; otherwise small
runs are trained here first (3 epochs, --small forces that). Then wrk (Debian package `wrk`)
hammers POST /v1/ota/check with fresh device ids, each answered with a freshly signed manifest.
Targets (issue 4): (b) and (c) at most 5% of the full download; >= 500 checks/s at p99 <= 20 ms.
Writes bench/results/ota.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tandem.apps.celebmatch.gallery import APP, GALLERY_FILE, build_gallery, enroll
from tandem.bundle import Bundle, write_manifest
from tandem.bundle.runtime import OnnxModel
from tandem.data import load_catalog
from tandem.data.pixels import load_pixels
from tandem.device import ModelUpdater
from tandem.export.exporter import ExportOptions, export_run, load_net
from tandem.security.signing import PublicKey
from tandem.settings import get_settings
from tandem.testing.served import serve
from tandem.training import checkpoint
from tandem.training.run import TrainConfig, load_run
from tandem.training.trainer import preprocess_spec, train

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "work" / "ota"
ACCURACY = HERE / "work" / "accuracy"
RESULTS = HERE / "results"
MODEL = "celebmatch"
TARGET_DELTA = 0.05
TARGET_RPS, TARGET_P99_MS = 500, 20.0
console = Console(width=150)


# --- the four versions ------------------------------------------------------------------------
def source_runs(small: bool) -> tuple[Path, Path]:
    """The base run and an independent one (another seed) for the full retrain."""
    found = [ACCURACY / f"run-e120-v0-s{s}" for s in (0, 1)]
    if not small and all((r / checkpoint.BEST).exists() for r in found):
        return found[0], found[1]
    runs = []
    for seed in (0, 1):
        out = WORK / f"run-small-s{seed}"
        if not (out / checkpoint.BEST).exists():
            console.print(f"training a small run (seed {seed}, 3 epochs) into {out}")
            train(TrainConfig(data="lfw", name=MODEL, out=out, min_faces=20, epochs=3, seed=seed),
                  resume=(out / checkpoint.LAST).exists(), data_home=get_settings().data_home)
        runs.append(out)
    return runs[0], runs[1]


def finetune_head(src: Path, dst: Path, epochs: int = 2) -> Path:
    """A copy of run ``src`` whose classifier alone trained ``epochs`` more epochs (the rest frozen)."""
    if (dst / ".head-done").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("config.json", "dataset.json", "history.json", checkpoint.BEST):
        shutil.copy2(src / name, dst / name)
    net, state = load_net(dst)
    cfg, data = load_run(dst, get_settings().data_home)
    pixels, labels, _ = load_pixels(data.part("train"), preprocess_spec(cfg, data, net.cfg))
    with torch.no_grad():  # frozen body: its embeddings once, then only the head trains
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        emb = torch.cat([net(x[i : i + 128])[1] for i in range(0, len(x), 128)])
    y = torch.from_numpy(labels).long()
    head = net.classifier.train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            opt.zero_grad()
            loss_fn(head(emb[idx]), y[idx]).backward()
            opt.step()
    state["model"] = net.eval().state_dict()
    checkpoint.save(dst / checkpoint.BEST, state)
    (dst / ".head-done").touch()
    return dst


def exported(run: Path, out: Path) -> Path:
    if not (out / "manifest.json").exists():
        console.print(f"exporting {run.name} → {out}")
        export_run(run, out, ExportOptions(name=MODEL, formats="onnx"))  # ONNX delivery is measured
    return out


def enrolled(bundle: Path, min_faces: int) -> Path:
    b = Bundle.load(bundle)
    if APP not in b.manifest.apps:
        console.print(f"enrolling LFW people with >= {min_faces} photos into {bundle}")
        gallery = build_gallery(OnnxModel.open(b), load_catalog("lfw", min_faces, get_settings().data_home), max_per_identity=10)
        enroll(b, gallery, source=f"lfw min_faces={min_faces} max_per_identity=10")
    return bundle


def with_gallery_of(bundle: Path, donor: Path, out: Path) -> Path:
    """``bundle``'s model files with ``donor``'s gallery, byte for byte (an unchanged embedding
    network gives the same gallery, so a head-only update does not re-enrol)."""
    if (out / "manifest.json").exists():
        return out
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    shutil.copytree(bundle, stage, dirs_exist_ok=True)
    shutil.copy2(donor / GALLERY_FILE, stage / GALLERY_FILE)
    manifest = Bundle.load(bundle).manifest.model_copy(deep=True)
    manifest.apps[APP] = Bundle.load(donor).manifest.apps[APP]
    write_manifest(stage, manifest)
    Bundle.load(stage)
    os.replace(stage, out)
    return out


def versions(small: bool) -> list[Path]:
    base_run, other_run = source_runs(small)
    tag = "small" if base_run.name.startswith("run-small") else "e120"
    root = WORK / f"bundles-{tag}"
    root.mkdir(parents=True, exist_ok=True)
    head_run = finetune_head(base_run, WORK / f"run-{tag}-head")
    v1 = enrolled(exported(base_run, root / "v1-base"), 20)
    v2 = with_gallery_of(exported(head_run, root / "head-export"), v1, root / "v2-head")
    v3 = root / "v3-gallery"
    if not (v3 / "manifest.json").exists():
        stage = Path(tempfile.mkdtemp(dir=root, prefix=".v3-gallery."))
        shutil.copytree(v2, stage, dirs_exist_ok=True)
        b = Bundle.load(stage)
        console.print("re-enrolling LFW people with >= 15 photos (v3)")
        enroll(b, build_gallery(OnnxModel.open(b), load_catalog("lfw", 15, get_settings().data_home), max_per_identity=10),
               source="lfw min_faces=15 max_per_identity=10")
        os.replace(stage, v3)
    v4 = enrolled(exported(other_run, root / "v4-retrain"), 15)
    return [v1, v2, v3, v4]


# --- the server ---------------------------------------------------------------------------------
def tandem(env: dict[str, str], *args: object) -> dict | list:
    proc = subprocess.run([sys.executable, "-m", "tandem", *map(str, args), "--json"], env=env, check=False,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tandem {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def until_offered(u: ModelUpdater, version: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        offered = u.check()
        if offered is not None and offered.version == version:
            return
        time.sleep(0.1)
    raise SystemExit(f"the server never offered v{version}")


# --- manifest checks under load ------------------------------------------------------------------
WRK_SCRIPT = r"""
local counter = 0
local thread_id = 0
setup = function(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
request = function()
  counter = counter + 1
  local body = string.format('{"model":"%(model)s","version":%(version)d,"channel":"production",' ..
    '"device_id":"bench-%%d-%%d","platform":"android","os_version":"14","app_version":"2.4.0","ram_mb":4096}',
    tid or 0, counter)
  return wrk.format("POST", "/v1/ota/check",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(key)s"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\nRESULT {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"errors":%%d,"non_2xx":%%d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def load_test(url: str, key: str, version: int, duration: int, connections: int, expect: int) -> dict:
    import httpx

    # The load must take the path it claims to: one request like wrk's first, its status checked.
    body = {"model": MODEL, "version": version, "channel": "production", "device_id": "bench-probe",
            "platform": "android", "os_version": "14", "app_version": "2.4.0", "ram_mb": 4096}
    status = httpx.post(f"{url}/v1/ota/check", json=body, headers={"authorization": f"Bearer {key}"}).status_code
    if status != expect:
        raise SystemExit(f"a manifest check from v{version} got {status}, expected {expect}")
    if shutil.which("wrk") is None:
        console.print("[yellow]wrk is not installed (apt-get install wrk): manifest checks not measured[/]")
        return {}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"model": MODEL, "version": version, "key": key})
    try:
        proc = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, duration)}s", "-s", f.name, url],
                              check=False, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    out = proc.stdout
    if proc.returncode:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"RESULT (\{.*\})", out)
    if m is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(m.group(1))
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "requests": r["requests"], "errors": r["errors"], "non_2xx": r["non_2xx"], "connections": connections}


# --- the run ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="Train small runs here instead of using bench-accuracy's.")
    ap.add_argument("--duration", type=int, default=10, help="Seconds of load per manifest-check measurement.")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (closed loop).")
    ap.add_argument("--workers", type=int, default=1, help="tandem serve worker processes.")
    args = ap.parse_args()
    if not os.environ.get("TANDEM_DATA_HOME"):
        os.environ["TANDEM_DATA_HOME"] = str(REPO.parent / "shared" / "datasets")

    bundles = versions(args.small)
    home, device_store = WORK / "home", WORK / "device"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(device_store, ignore_errors=True)
    # One device key speaks for the whole fleet, so the per-key rate limit must not cap the load test.
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000", "TANDEM_REDIS_URL": "",
           "TANDEM_ALIAS_POLL_S": "0.2", "TANDEM_PRELOAD": "0"}
    env.pop("TANDEM_OTA_MASTER_KEY", None)
    for b in bundles:
        tandem(env, "push", b)
    tandem(env, "release", MODEL, 1)
    key = tandem(env, "keys", "create", "--scope", "device", "--label", "bench")["key"]
    # The load test checks as thousands of made-up device ids: an admin key may answer for any device_id (a
    # registered device only for its own), and takes the same check path.
    admin = tandem(env, "keys", "create", "--scope", "admin", "--label", "bench checks")["key"]
    trusted = [PublicKey.from_b64(k["public_key"]) for k in tandem(env, "keys", "signing", "list")]

    served = serve("--workers", str(args.workers), env=env)
    url = served.url
    rows = []
    try:
        names = ["(a) first install", "(b) head fine-tuned", "(c) gallery re-enrolled", "(d) full retrain"]
        with ModelUpdater(url, key, MODEL, trusted_keys=trusted, store_dir=device_store, platform="android",
                          os_version="14", app_version="2.4.0", ram_mb=4096, timeout=60) as u:
            for version, name in enumerate(names, start=1):
                if version > 1:
                    tandem(env, "release", MODEL, version)
                until_offered(u, version)
                offered = u.check()
                assert offered is not None
                full = sum(f.download_size for f in offered.files.values())
                result = u.update()
                loaded = u.load()
                assert loaded.version == version and result.version == version
                rows.append({"scenario": name, "version": version, "downloaded_bytes": result.downloaded_bytes,
                             "full_bytes": full, "fraction": result.downloaded_bytes / full,
                             "install_seconds": result.seconds, "sources": result.sources})
        # Every check below gets a manifest signed for a new device id; 204s ("current") cost less.
        signed = load_test(url, admin, 3, args.duration, args.connections, expect=200)
        current = load_test(url, admin, 4, args.duration, args.connections, expect=204)
    finally:
        served.stop()

    first, head, gallery, retrain = rows
    result = {
        "full_bytes": first["downloaded_bytes"],
        "delta_head_bytes": head["downloaded_bytes"],
        "delta_gallery_bytes": gallery["downloaded_bytes"],
        "delta_retrain_bytes": retrain["downloaded_bytes"],
        "install_seconds": first["install_seconds"],
        "manifest_rps": signed.get("rps"),
        "manifest_p99_ms": signed.get("p99_ms"),
        "scenarios": rows,
        "manifest_check_signed": signed,
        "manifest_check_current_204": current,
        "setup": {"runs": [str(p.relative_to(REPO)) for p in bundles], "workers": args.workers,
                  "load": f"wrk -t1 -c{args.connections} -d{args.duration}s on the same machine",
                  "cpus": os.cpu_count(), "model_file": "model.onnx (fp32)",
                  "install_seconds": "check + download over loopback + verify + decrypt + ONNX Runtime load + atomic "
                                     "install, in ModelUpdater.update()"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ota.json").write_text(json.dumps(result, indent=2) + "\n")

    t = Table(title="OTA: bytes a device downloads, and manifest checks", show_edge=False)
    for col in ("scenario", "downloaded", "of a full download", "install (s)", "how", "target", ""):
        t.add_column(col)
    for r in rows:
        ok = r["fraction"] <= TARGET_DELTA if r["version"] in (2, 3) else None
        t.add_row(r["scenario"], f"{r['downloaded_bytes']:,} B", f"{r['fraction']:.2%}", f"{r['install_seconds']:.2f}",
                  ", ".join(f"{k.split('.')[0]} {v}" for k, v in r["sources"].items()),
                  "≤ 5%" if ok is not None else "", "" if ok is None else ("[green]ok[/]" if ok else "[red]missed[/]"))
    for label, m in (("manifest check, signed", signed), ("manifest check, 204", current)):
        if m:
            ok = m["rps"] >= TARGET_RPS and m["p99_ms"] <= TARGET_P99_MS
            t.add_row(label, f"{m['rps']:.0f} req/s", f"p99 {m['p99_ms']:.1f} ms", "",
                      f"{m['requests']} requests, {m['errors'] + m['non_2xx']} failed, {m['connections']} conns",
                      f"≥ {TARGET_RPS}/s, p99 ≤ {TARGET_P99_MS:g} ms", "[green]ok[/]" if ok else "[red]missed[/]")
    console.print(t)
    console.print(f"wrote {(RESULTS / 'ota.json').relative_to(REPO)}")


if __name__ == "__main__":
    main()
