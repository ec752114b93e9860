"""bench/scale.py's ``managed_training`` part: the same training through Tandem's own training service
(`tandem train --remote` → POST /v1/trainings → a Ray Job that trains, exports and pushes) against the
same work done locally by the plain CLI (`tandem train`, `tandem export --formats onnx`, `tandem push`).

    .venv/bin/python bench/scale.py --only managed_training [--managed-epochs 5] [--rounds 2]

The dataset: the people of part (a) (LFW, --min-faces photos or more) as a folder of class folders,
which both paths train on with part (a)'s settings (stem stride 2, 32-photo batches, seed 0, no
validation). The service: a Ray head started here (`ray start --head`, 2 CPUs, its own session and
free ports, token auth; stopped by signalling its session's processes, never `ray stop`) and one
`tandem serve` with TANDEM_RAY_JOBS_ADDRESS, on a registry of its own.

Measured per round (best of --rounds, interleaved): ``submit_to_first_epoch_s`` (from the request that
hands over the dataset to the client seeing the first epoch's metrics: upload, checks, Ray scheduling
the job, its start-up, reading the photos, the first epoch), ``end_to_end_s`` (the whole
`tandem train --remote` command: packing to the pushed version printed), the local pipeline's seconds
(``local_pipeline_s``: train + export + push; ``local_train_s``: train alone), and
``overhead_vs_local_train`` = end_to_end_s / local_pipeline_s - 1 (0.12 = 12% slower than doing the
same locally). Target: at most 0.15.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tandem.testing.processes import free_port, stop
from tandem.testing.ray_nodes import ray_nodes
from tandem.testing.served import wait_ready

TARGET = 0.15
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def ray_head(cpus: int = 2) -> Iterator[tuple[str, str]]:
    """A Ray head alone with its dashboard (Ray Jobs' API): (dashboard URL, auth token); its jobs run this venv's
    `python`."""
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with ray_nodes(0, head_cpus=cpus, pin=False, env=env) as cluster:
        yield cluster.dashboard, cluster.token


def dataset(work: Path, min_faces: int) -> Path:
    """The people of part (a) as a folder of class folders (hard links into LFW where possible)."""
    from tandem.data.lfw import load_lfw
    from tandem.errors import TandemError
    from tandem.settings import get_settings

    root = work / f"lfw-{min_faces}"
    if root.is_dir():
        return root
    try:
        catalog = load_lfw(get_settings().require_data_home(), min_faces=min_faces)
    except TandemError as e:
        raise SystemExit(f"managed_training: {e}") from None
    stage = work / f".lfw-{min_faces}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    for record in catalog.records:
        target = stage / catalog.classes[record.label] / record.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(record.path, target)
        except OSError:
            shutil.copyfile(record.path, target)
    stage.rename(root)
    return root


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def local_cell(data: Path, flags: list[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    run, bundle = work / "local-run", work / "local-bundle"
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(bundle, ignore_errors=True)
    train_s, out = _run([str(BIN / "tandem"), "train", "--data", str(data), "--out", str(run), "--name", "managed",
                         *flags, "--json"], env)
    export_s, _ = _run([str(BIN / "tandem"), "export", str(run), "--out", str(bundle), "--formats", "onnx", "--json"],
                       env)
    push_s, _ = _run([str(BIN / "tandem"), "push", str(bundle), "--force", "--json"], env)
    return {"train_s": round(train_s, 2), "export_s": round(export_s, 2), "push_s": round(push_s, 2),
            "pipeline_s": round(train_s + export_s + push_s, 2), "summary": json.loads(out)}


def remote_cell(data: Path, flags: list[str], url: str, key: str, env: dict[str, str]) -> dict[str, Any]:
    wall, out = _run([str(BIN / "tandem"), "train", "--remote", url, "--data", str(data), "--name", "managed", *flags,
                      "--json"], {**env, "TANDEM_API_KEY": key})
    summary = json.loads(out)
    seconds = summary["seconds"]
    return {"end_to_end_s": round(wall, 2), "submit_to_first_epoch_s": seconds.get("first_epoch"),
            "client_seconds": seconds, "version": summary["version"], "training": summary["training"]}


def managed_training(work: Path, min_faces: int, epochs: int, batch_size: int, rounds: int, env: dict[str, str],
                     say: Any = print, subset: float | None = None) -> dict[str, Any]:
    """The ``managed_training`` section of scale.json (``subset``: a fraction of each class, for a smoke run)."""
    try:
        import ray  # noqa: F401 - the service needs Ray's job API
    except ModuleNotFoundError as e:
        raise SystemExit(f"managed_training needs the ray extras ({e.name}): pip install -e '.[ray]'") from e
    work.mkdir(parents=True, exist_ok=True)
    data = dataset(work, min_faces)
    flags = ["--epochs", str(epochs), "--batch-size", str(batch_size), "--stem-stride", "2", "--val-fraction", "0",
             "--seed", "0", *(["--subset", str(subset)] if subset else [])]
    local_env = {**env, "TANDEM_HOME": str(work / "local-home")}
    home = work / "service-home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(work / "local-home", ignore_errors=True)
    locals_: list[dict[str, Any]] = []
    remotes: list[dict[str, Any]] = []
    with ray_head() as (dashboard, token):
        svc_env = {**env, "TANDEM_HOME": str(home), "TANDEM_RAY_JOBS_ADDRESS": dashboard,
                   "TANDEM_RAY_JOBS_TOKEN": token, "TANDEM_PRELOAD": "0"}
        key = json.loads(_run([str(BIN / "tandem"), "keys", "create", "--scope", "train", "--json"], svc_env)[1])["key"]
        port = free_port()
        server = subprocess.Popen([str(BIN / "tandem"), "serve", "--port", str(port), "--log-level", "warning"],
                                  env=svc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, server, timeout_s=180)
            for r in range(rounds):
                say(f"managed training: local (round {r + 1}/{rounds})…")
                locals_.append({**local_cell(data, flags, work, local_env), "load": round(os.getloadavg()[0], 2)})
                say(f"  train {locals_[-1]['train_s']} s, with export and push {locals_[-1]['pipeline_s']} s")
                say(f"managed training: through the service (round {r + 1}/{rounds})…")
                remotes.append({**remote_cell(data, flags, url, key, env), "load": round(os.getloadavg()[0], 2)})
                say(f"  first epoch after {remotes[-1]['submit_to_first_epoch_s']} s, "
                    f"pushed after {remotes[-1]['end_to_end_s']} s")
        finally:
            stop(server, grace_s=30)
    best_local = min(locals_, key=lambda c: c["pipeline_s"])
    best_remote = min(remotes, key=lambda c: c["end_to_end_s"])
    overhead = best_remote["end_to_end_s"] / best_local["pipeline_s"] - 1
    return {
        "submit_to_first_epoch_s": min(c["submit_to_first_epoch_s"] for c in remotes),
        "end_to_end_s": best_remote["end_to_end_s"],
        "overhead_vs_local_train": round(overhead, 3),
        "target": TARGET, "met": overhead <= TARGET,
        "local_pipeline_s": best_local["pipeline_s"], "local_train_s": min(c["train_s"] for c in locals_),
        "overhead_vs_train_alone": round(best_remote["end_to_end_s"] / min(c["train_s"] for c in locals_) - 1, 3),
        "dataset": {"people_min_faces": min_faces, "images": sum(1 for _ in data.rglob("*.jpg"))},
        "spec": {"epochs": epochs, "batch_size": batch_size, "stem_stride": 2, "val_fraction": 0, "seed": 0,
                 "workers": 1, "subset": subset or 1.0},
        "rounds": {"local": locals_, "remote": remotes},
        "how": "the same training: `tandem train` + `tandem export --formats onnx` + `tandem push` locally, against "
               "`tandem train --remote` (upload, Ray Job: train, export, push; a Ray head with 2 CPUs on this machine)",
    }
