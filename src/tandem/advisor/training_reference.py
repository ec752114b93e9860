"""What Tandem's own benchmarks measured about training: the figures `tandem advise --training` scales
from where a run cannot speak for itself.

- A classifier's seconds per image on the CPU of Tandem's 2-vCPU build machine (bench/accuracy.py's CPU
  runs) and on a lent NVIDIA H200 (its ``--device cuda`` runs, bench/gpu/train_runs.sh): the same
  network and settings, so their ratio is a measured CPU → GPU speedup. Only runs without a validation
  split count (``val_fraction`` 0), so an epoch is training alone on both.
- Deep art's effects on the build machine's CPU (bench/deepart.py): distilled effects (``stylize``) and
  neural styles (``stylize-neural``).
- Ray Train against the plain trainer on the same machine (bench/scale.py's ``train`` part: one worker's
  throughput ÷ the plain trainer's, and each one's start-up: wall time less its epochs), and across
  nodes once bench/scale.py has measured ``multi_node.train_ips`` (1 and 2 nodes): Amdahl's serial
  fraction from the two, else an assumed one.

The package ships these figures in training_reference.json, taken from bench/results by
:func:`from_bench` (``python -m tandem.advisor.training_reference bench/results`` writes it again);
``tandem advise --training … --bench-results DIR`` reads a folder of benchmark results instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tandem import atomic
from tandem.errors import ConfigError

SHIPPED = "training_reference.json"
# bench/accuracy.py's classifier: TrainConfig's defaults (tandem.training.run) with --min-faces 20. A run
# of the same network settings is timed on a GPU by this measurement directly.
CLASSIFIER = {"objective": "classify", "height": 100, "width": 75, "stem_stride": 1, "width_mult": 1.0,
              "batch_size": 64, "augment": True}
# bench/deepart.py's settings (its TRAIN call): photos of 256 px, crops of 128, batches of 16.
STYLIZER = {"photo_size": 256, "crop": 128, "batch_size": 16}
# bench/gpu/train_runs.sh ran the accuracy benchmark's --device cuda runs on the GPU the device tool lent:
# an H200 (commit 7e7e365); the results files do not name it.
BENCH_GPU = "h200"
BENCH_GPUS = {"h200": {"gpu": "NVIDIA H200 141 GB", "memory_tb_s": 4.8,
                       "spec_source": "NVIDIA H200 Tensor Core GPU datasheet: 4.8 TB/s HBM3e"}}
# Amdahl's serial fraction when no multi-node throughput was measured: an assumption. Each step all-reduces
# the gradients (3.4 MB for the classifier: milliseconds on a 10 Gbit/s link against ~1 s of compute a step
# on 2 vCPUs) and validation runs on rank 0 alone (tandem.training.loop): a few percent of an epoch.
ASSUMED_SERIAL_FRACTION = 0.05


@dataclass(frozen=True)
class Rate:
    """Training seconds per image of one task, over the runs measured."""

    seconds_per_image: float
    images: int  # per epoch, in the runs measured (the largest)
    epochs: int  # over all of them
    seconds: float
    network: dict[str, Any]  # the settings the runs trained with
    vcpus: int | None  # of the machine (None: a GPU's)
    source: str


@dataclass(frozen=True)
class Ray:
    worker_factor: float  # one Ray Train worker's images/s ÷ the plain trainer's, same machine
    local_startup_s: float  # the plain `tandem train`: wall time less its epochs
    ray_startup_s: float  # `tandem train --workers 1`: the same
    serial_fraction: float  # Amdahl's: speedup(N) = 1 / (s + (1 − s) / N)
    serial_basis: str  # measured | assumed
    source: str


@dataclass(frozen=True)
class Reference:
    cpu: dict[str, Rate]  # task → rate on the build machine's CPU
    gpu: dict[str, dict[str, Rate]]  # GPU key (as in the price table) → task → rate
    gpus: dict[str, dict[str, Any]]  # the measured GPUs: gpu (name), memory_tb_s, spec_source
    ray: Ray
    origin: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("origin")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str) -> Reference:
        try:
            return cls(cpu={k: Rate(**v) for k, v in d["cpu"].items()},
                       gpu={g: {k: Rate(**v) for k, v in t.items()} for g, t in d["gpu"].items()},
                       gpus=d["gpus"], ray=Ray(**d["ray"]), origin=origin)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{origin}: not a training reference of this Tandem version ({e})") from e

    def speedup(self, gpu: str, task: str) -> float | None:
        """Measured CPU → ``gpu`` speedup of ``task`` (same network on both), or None."""
        cpu, on_gpu = self.cpu.get(task), self.gpu.get(gpu, {}).get(task)
        if cpu is None or on_gpu is None or cpu.network != on_gpu.network:
            return None
        return cpu.seconds_per_image / on_gpu.seconds_per_image


def shipped() -> Reference:
    text = resources.files("tandem.advisor").joinpath(SHIPPED).read_text("utf-8")
    return Reference.from_dict(json.loads(text), f"tandem/advisor/{SHIPPED}")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable benchmark result ({e})") from e


def _rate(runs: list[tuple[str, float, int, int]], network: dict[str, Any], vcpus: int | None,
          what: str) -> Rate | None:
    """``runs``: (file, seconds, epochs, images per epoch)."""
    if not runs:
        return None
    seconds = sum(r[1] for r in runs)
    images = sum(r[2] * r[3] for r in runs)
    files = ", ".join(sorted({r[0] for r in runs}))
    return Rate(seconds / images, max(r[3] for r in runs), sum(r[2] for r in runs), round(seconds, 2), network,
                vcpus, f"{what}: {sum(r[2] for r in runs)} epochs in {seconds:,.1f} s over {len(runs)} run(s) "
                       f"({files})")


def _ray(scale: dict[str, Any] | None, source: str) -> Ray:
    if scale is None:
        return Ray(1.0, 0.0, 0.0, ASSUMED_SERIAL_FRACTION, "assumed",
                   "no bench/results/scale.json: Ray taken as fast as the plain trainer, no start-up time")
    train = scale.get("train", {})
    local, ray1 = train.get("local", {}), train.get("ray1", {})

    def startup(run: dict[str, Any]) -> float:
        return max(0.0, float(run.get("wall_s", 0.0)) - sum(run.get("epoch_seconds", [])))

    factor = ray1["ips"] / local["ips"] if local.get("ips") and ray1.get("ips") else 1.0
    multi = scale.get("multi_node", {}).get("train_ips", {})
    s2 = float(multi["2"]) / float(multi["1"]) if multi.get("1") and multi.get("2") else None
    if s2 is not None and 1.0 <= s2 <= 2.0:
        # Amdahl with two points: speedup S₂ = 1 / (s + (1 − s)/2) ⇒ s = 2/S₂ − 1.
        serial, basis = 2.0 / s2 - 1.0, "measured"
        how = f"serial fraction from multi_node.train_ips: 2 nodes {s2:.2f}× one"
    elif s2 is not None:
        # Amdahl's law gives 1-2× on two nodes; outside that something it lacks (overhead that grows with the
        # nodes) ruled the run, and no serial fraction describes it: the assumed one is kept, and said why.
        serial, basis = ASSUMED_SERIAL_FRACTION, "assumed"
        how = (f"serial fraction {ASSUMED_SERIAL_FRACTION:g} assumed: multi_node.train_ips measured 2 nodes at "
               f"{s2:.2f}× one, outside the 1-2× Amdahl's law can describe")
    else:
        serial, basis = ASSUMED_SERIAL_FRACTION, "assumed"
        how = (f"serial fraction {ASSUMED_SERIAL_FRACTION:g} assumed (no multi_node.train_ips measured: "
               "bench/scale.py's multi-node part measures it)")
    return Ray(round(factor, 4), round(startup(local), 2), round(startup(ray1), 2), serial, basis,
               f"{source}: one Ray Train worker {ray1.get('ips')} images/s against the plain trainer's "
               f"{local.get('ips')} ({factor:.2f}×); start-up = wall time less the epochs; {how}")


def from_bench(results: Path) -> Reference:
    """The reference figures from a folder of benchmark results (bench/results)."""
    if not results.is_dir():
        raise ConfigError(f"--bench-results {results}: no such folder (Tandem's is bench/results)")
    scale_path = results / "scale.json"
    scale = _read(scale_path) if scale_path.is_file() else None
    vcpus = (scale or {}).get("machine", {}).get("cpus")
    cpu_runs: list[tuple[str, float, int, int]] = []
    gpu_runs: list[tuple[str, float, int, int]] = []
    for path in sorted(results.glob("accuracy*.json")):
        d = _read(path)
        keys = ("train_seconds", "epochs", "train_images", "device")
        if not all(k in d for k in keys) or d.get("val_fraction", 0.0) != 0.0 or d.get("val_images", 0):
            continue
        run = (path.name, float(d["train_seconds"]), int(d["epochs"]), int(d["train_images"]))
        if d["device"] == "cuda":
            gpu_runs.append(run)
        elif d["device"] == "cpu":
            cpu_runs.append(run)
    cpu: dict[str, Rate] = {}
    classify = _rate(cpu_runs, CLASSIFIER, vcpus, f"bench/accuracy.py's classifier on the {vcpus}-vCPU build machine")
    if classify:
        cpu["classify"] = classify
    deepart_path = results / "deepart.json"
    if deepart_path.is_file():
        deepart = _read(deepart_path)
        dvcpus = deepart.get("machine", {}).get("cpu_count", vcpus)
        for task, neural in (("stylize", False), ("stylize-neural", True)):
            runs = [("deepart.json", float(e["train_seconds"]), int(e["epochs"]), int(e["train_images"]))
                    for e in deepart.get("effects", {}).values()
                    if "train_seconds" in e and (e.get("style") is not None) == neural]
            what = "neural styles" if neural else "distilled effects"
            rate = _rate(runs, STYLIZER, dvcpus, f"bench/deepart.py's {what} on the {dvcpus}-vCPU build machine")
            if rate:
                cpu[task] = rate
    gpu_rate = _rate(gpu_runs, CLASSIFIER, None, f"bench/accuracy.py's classifier on a lent {BENCH_GPUS[BENCH_GPU]['gpu']} "
                     "(two runs at a time shared it, 8 CPU cores each)")
    gpu = {BENCH_GPU: {"classify": gpu_rate}} if gpu_rate else {}
    return Reference(cpu, gpu, dict(BENCH_GPUS) if gpu else {}, _ray(scale, "scale.json"), origin=str(results))


def load_reference(results: Path | None = None) -> Reference:
    return shipped() if results is None else from_bench(results)


def main(argv: list[str]) -> None:
    """``python -m tandem.advisor.training_reference bench/results [OUT]``: write the shipped figures again."""
    results = Path(argv[0]) if argv else Path("bench/results")
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name(SHIPPED)
    atomic.write_text(out, json.dumps(from_bench(results).to_dict(), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
