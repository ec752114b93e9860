"""Past one machine, measured on one: Ray Train and Ray Serve against Tandem's plain paths.

    make bench-scale          (or: .venv/bin/python bench/scale.py [--quick] [--device cuda])

(a) Training throughput (images/s) of the same run (LFW people with 40+ photos, stem stride 2,
    32-photo batches, seed 0, no validation) three ways, each a `tandem train` command as a user
    types it: the plain trainer, `--workers 1` and `--workers 2` (Ray Train on a local instance the
    command starts). ``train_ips`` is the steady rate: training images × epochs after the first,
    over those epochs' seconds (from history.json); the first epoch and Ray's start-up are in
    ``train_wall_s``, the whole command's time, and in ``train_ips_wall``.
(b) Serving throughput (answers/s) at concurrency 16 of the bundle exported from the 2-worker run:
    plain `tandem serve` (one uvicorn worker), `tandem serve --ray --replicas 1` and `--replicas 2`,
    driven by bench/serving/loadgen.py (closed loop, keep-alive, OIP v2 binary, one LFW photo per
    request, pre-encoded).

Writes bench/results/scale.json (``train_ips`` = {local, ray1, ray2}, ``serve_rps`` = {plain, ray1,
ray2}, and the detail of every cell) and prints a table. The machine may be shared: every cell
records the load average around it.

With --device cuda, (a) runs on the GPU (Ray workers reserve one GPU each) and the results name the
card; (b) is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tandem.testing.processes import free_port, stop
from tandem.testing.served import wait_ready

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work" / "scale"
TANDEM = Path(sys.executable).parent / "tandem"
LOADGEN = HERE / "serving" / "loadgen.py"
console = Console(width=None if sys.stdout.isatty() else 160)

TRAIN_MODES = {"local": [], "ray1": ["--workers", "1"], "ray2": ["--workers", "2"]}
SERVE_MODES = {"plain": [], "ray1": ["--ray", "--replicas", "1"], "ray2": ["--ray", "--replicas", "2"]}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def train_cell(mode: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    out = WORK / f"run-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(TANDEM), "train", "--data", "lfw", "--min-faces", str(args.min_faces), "--stem-stride", "2",
           "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--val-fraction", "0", "--seed", "0",
           "--device", args.device, "--out", str(out), "--json", *TRAIN_MODES[mode]]
    if args.device == "cuda" and mode != "local":
        cmd += ["--gpus-per-worker", "1"]
    load0, t0 = load(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    history = json.loads((out / "history.json").read_text())
    steady = history[1:] or history
    images = summary["train_images"]
    return {
        "command": " ".join(cmd[1:]), "train_images": images, "epochs": len(history),
        "epoch_seconds": [round(h["seconds"], 3) for h in history],
        # Other work on a shared machine only ever slows an epoch down: the fastest is the least disturbed.
        "ips": round(images / min(h["seconds"] for h in steady), 1),
        "ips_mean": round(images * len(steady) / sum(h["seconds"] for h in steady), 1),
        "wall_s": round(wall, 1), "ips_wall": round(images * len(history) / wall, 1),
        "final_train_loss": round(history[-1]["train_loss"], 4), "load_before": load0, "load_after": load(),
    }


def photos(bundle: Path, n: int) -> np.ndarray:
    from tandem.bundle import Bundle
    from tandem.bundle.preprocess import decode_image, to_input
    from tandem.data.lfw import load_lfw
    from tandem.settings import get_settings

    b = Bundle.load(bundle)
    cat = load_lfw(get_settings().require_data_home(), min_faces=20)
    picks = cat.records[:: max(1, len(cat.records) // n)][:n]
    spec = b.manifest.preprocessing.model_copy(update={"crop": cat.crop})
    return np.stack([to_input(decode_image(r.path), spec) for r in picks])


def requests_file(images: np.ndarray, port: int, key: str, model: str) -> Path:
    reqs = []
    for img in images:
        raw = np.ascontiguousarray(img, np.uint8).tobytes()
        head = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, *img.shape],
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                                       {"name": "embedding", "parameters": {"binary_data": True}}]},
                          separators=(",", ":")).encode()
        body = head + raw
        lines = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Content-Type: application/octet-stream", f"Content-Length: {len(body)}",
                 f"Inference-Header-Content-Length: {len(head)}", f"Authorization: Bearer {key}"]
        reqs.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    path = WORK / f"requests-{port}.pkl"
    with open(path, "wb") as f:
        pickle.dump(reqs, f)
    return path


def serve_cell(mode: str, args: argparse.Namespace, env: dict[str, str], images: np.ndarray, key: str,
               model: str) -> dict:
    port = free_port()
    cmd = [str(TANDEM), "serve", "--port", str(port), "--log-level", "warning", *SERVE_MODES[mode]]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=180)
        ready_s = time.perf_counter() - t0
        load0 = load()
        lg = subprocess.run([sys.executable, str(LOADGEN), "--requests", str(requests_file(images, port, key, model)),
                             "--port", str(port), "--concurrency", str(args.concurrency), "--duration",
                             str(args.duration), "--warmup", "3"], check=False, capture_output=True,
                             text=True)
        if lg.returncode != 0:
            raise SystemExit(f"loadgen failed: {lg.stderr[-2000:]}")
        result = json.loads(lg.stdout.strip().splitlines()[-1])
    finally:
        stop(proc, grace_s=60)
    return {"command": " ".join(cmd[1:]), "ready_s": round(ready_s, 1), "rps": result["rps"],
            "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "errors": result["errors"],
            "statuses": result["statuses"], "load_before": load0, "load_after": load()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer epochs and a shorter load: a smoke run")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--min-faces", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2,
                   help="run the three trainings (and servers) this many times, interleaved, keeping each one's best")
    p.add_argument("--bundle", type=Path, help="serve this bundle (default: the one exported from the 2-worker run)")
    p.add_argument("--parts", default="train,serve", help="train, serve or both (serve alone needs --bundle)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds of load per server")
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.duration = 2, 6.0
    WORK.mkdir(parents=True, exist_ok=True)
    home = WORK / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_ACCESS_LOG": "0", "COLUMNS": "160",
           # The bench measures throughput, not the per-key limits.
           "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000"}
    for var in ("TANDEM_DATABASE_URL", "TANDEM_REDIS_URL", "TANDEM_RAY_ADDRESS"):
        env.pop(var, None)

    parts = set(args.parts.split(","))
    if args.device == "cuda":
        parts.discard("serve")
    if "serve" in parts and "train" not in parts and args.bundle is None:
        raise SystemExit("--parts serve needs --bundle (without training there is no run to export)")
    result: dict = {"machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                                "python": platform.python_version()}, "device": args.device}
    if args.device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    train: dict[str, dict] = {}
    if "train" in parts:
        rounds: dict[str, list[dict]] = {m: [] for m in TRAIN_MODES}
        for r in range(args.rounds):
            for mode in TRAIN_MODES:
                console.print(f"[bold]training[/] {mode} (round {r + 1}/{args.rounds})…")
                cell = train_cell(mode, args, env)
                rounds[mode].append(cell)
                console.print(f"  {cell['ips']} images/s steady (mean {cell['ips_mean']}), {cell['wall_s']} s in all")
        for mode, cells in rounds.items():
            train[mode] = {**max(cells, key=lambda c: c["ips"]), "rounds": [c["ips"] for c in cells]}
        result["train"] = train
        result["train_ips"] = {m: c["ips"] for m, c in train.items()}
        result["train_wall_s"] = {m: c["wall_s"] for m, c in train.items()}
        result["train_ratio_ray1_vs_local"] = round(train["ray1"]["ips"] / train["local"]["ips"], 3)

    serve: dict[str, dict] = {}
    if "serve" in parts:
        bundle = args.bundle
        if bundle is None:  # the bundle of the 2-worker run: nothing downstream knows how it was trained
            bundle = WORK / "bundle"
            shutil.rmtree(bundle, ignore_errors=True)
            subprocess.run([str(TANDEM), "export", str(WORK / "run-ray2"), "--out", str(bundle), "--formats", "onnx"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from tandem.bundle import Bundle

        model = Bundle.load(bundle).manifest.name
        subprocess.run([str(TANDEM), "push", str(bundle)], env=env, check=True, stdout=subprocess.DEVNULL)
        key = json.loads(subprocess.run([str(TANDEM), "keys", "create", "--scope", "predict", "--json"], env=env,
                                        check=True, capture_output=True, text=True).stdout)["key"]
        images = photos(bundle, 64)
        tries: dict[str, list[dict]] = {m: [] for m in SERVE_MODES}
        for r in range(args.rounds):
            for mode in SERVE_MODES:
                console.print(f"[bold]serving[/] {mode} (round {r + 1}/{args.rounds})…")
                cell = serve_cell(mode, args, env, images, key, model)
                tries[mode].append(cell)
                console.print(f"  {cell['rps']} answers/s, p99 {cell['p99_ms']} ms")
        for mode, cells in tries.items():
            serve[mode] = {**max(cells, key=lambda c: c["rps"]), "rounds": [c["rps"] for c in cells]}
        result["serve_bundle"] = {"path": str(bundle), "model": model}
        result["serve"] = serve
        result["serve_rps"] = {m: c["rps"] for m, c in serve.items()}
        result["serve_ratio_ray1_vs_plain"] = round(serve["ray1"]["rps"] / serve["plain"]["rps"], 3)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"bench/scale on {result['machine']['cpus']} CPUs ({args.device}"
                        f"{', ' + result['gpu'] if result.get('gpu') else ''})")
    for col in ("path", "train images/s (steady)", "train wall s", f"serve answers/s @{args.concurrency}", "p99 ms",
                "errors"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for (tm, sm, label) in (("local", "plain", "plain (tandem train / tandem serve)"),
                            ("ray1", "ray1", "Ray, 1 worker / 1 replica"), ("ray2", "ray2", "Ray, 2 workers / 2 replicas")):
        t, sv = train.get(tm, {}), serve.get(sm, {})
        table.add_row(label, f"{t.get('ips', '—')}", f"{t.get('wall_s', '—')}", f"{sv.get('rps', '—')}",
                      f"{sv.get('p99_ms', '—')}", f"{sv.get('errors', '—')}")
    console.print(table)
    ratios = [f"{what} {result[k]}" for what, k in (("training", "train_ratio_ray1_vs_local"),
                                                    ("serving", "serve_ratio_ray1_vs_plain")) if k in result]
    console.print(f"Ray ÷ plain with one worker/replica: {', '.join(ratios)}  →  {args.out}")


if __name__ == "__main__":
    main()
