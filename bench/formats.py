"""Every format of a bundle side by side (issue 19): ONNX, LiteRT and ExecuTorch at fp32 and int8, Core ML at fp16.

    .venv/bin/python bench/formats.py [--run RUN_DIR] [--calls 300] [--quick]

Per variant: `bytes` (its file), `parity_max_abs` and `top1_agreement` (against PyTorch on the run's test photos,
as the export measured them by running the file), `b1_ms` (median of --calls batch-1 calls on one real photo, at
1 and 2 threads, through Tandem's runner for it: OnnxModel, LiteRtModel, ExecuTorchModel; `b1_p90_ms` beside it),
`export_seconds` (the conversion of that file, as the exporter logs it: ONNX int8 is its quantisation; LiteRT's is
timed inside its converter's process). Core ML: `bytes`, `spec_ok`, `ops` and `export_seconds`; Core ML predicts
only on macOS and iOS, so it has no parity and no latency here.

The run: --run; else the accuracy benchmark's 120-epoch classifier when bench/work/accuracy holds it (ACCURACY_RUN:
a well-trained model, as an app would ship; bench/gpu/train_runs.sh trains it on a GPU); else one trained here (LFW,
--min-faces 20, 5 epochs: a barely trained model, whose near ties keep int8's top-1 agreement under 0.99; --quick:
--min-faces 100, a tenth of the photos, 1 epoch, stem stride 2). It is exported three times, once per converter (onnx+litert,
onnx+executorch, onnx+coreml), so no conversion shares the CPU with another; ONNX's figures are the first
export's. Timing figures want a quiet machine. Writes bench/results/formats.json (--quick: formats-quick.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tandem.bundle import Bundle
from tandem.bundle.executorch_runtime import ExecuTorchModel
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.runtime import OnnxModel
from tandem.errors import BundleError
from tandem.export import timing
from tandem.export.exporter import ExportOptions, export_run
from tandem.export.formats import PRECISIONS
from tandem.training.run import load_history

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "formats"
ACCURACY_RUN = HERE / "work" / "accuracy" / "run-e120-v0-s0"  # bench/accuracy.py's default run (120 epochs, seed 0)
RESULTS = HERE / "results"
EXPORTS = ("litert", "executorch", "coreml")  # one export each, with ONNX
THREADS = (1, 2)
KEYS = ("onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8", "executorch-fp32", "executorch-int8", "coreml-fp16")
FP32_MAX_ABS, INT8_AGREEMENT, LITERT_INT8_SIZE = 1e-4, 0.99, 0.3  # the targets


class Seconds(logging.Handler):
    """Collects what the exporter logs about how long each file took (tandem.export.timing)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if (pair := getattr(record, timing.ATTRIBUTE, None)) is not None:
            self.seconds.setdefault(pair[0], pair[1])


def train(quick: bool) -> Path:
    if not quick and (ACCURACY_RUN / "best.pt").is_file() and len(load_history(ACCURACY_RUN)) >= 120:  # trained to the end
        print(f"measuring the accuracy benchmark's classifier, {ACCURACY_RUN}", flush=True)
        return ACCURACY_RUN
    out = WORK / ("run-quick" if quick else "run")
    if (out / "best.pt").is_file() or (out / "checkpoint.pt").is_file():
        return out
    args = (["--min-faces", "100", "--subset", "0.1", "--epochs", "1", "--stem-stride", "2"] if quick
            else ["--min-faces", "20", "--epochs", "5"])
    tandem = Path(sys.executable).parent / "tandem"
    subprocess.run([str(tandem), "train", "--data", "lfw", "--out", str(out), "--name", "formats", "--seed", "0",
                    "--no-progress", *args], check=True)
    return out


def b1_ms(runner: Any, photo: np.ndarray, calls: int) -> tuple[float, float]:
    for _ in range(max(5, calls // 10)):
        runner.run(photo)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        runner.run(photo)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), float(np.percentile(times, 90))


def open_runner(bundle: Bundle, key: str, threads: int) -> Any:
    fmt, precision = key.split("-")
    m = bundle.manifest
    if fmt == "onnx":
        return OnnxModel(bundle.variant_path(key), m.preprocessing, m.labels, precision, threads=threads)
    runner = {"litert": LiteRtModel, "executorch": ExecuTorchModel}[fmt]
    return runner.open(bundle, precision, threads=threads)


def one_photo(bundle: Bundle, run: Path) -> np.ndarray:
    """The run's first test photo (else its first photo) as the bundle's pixels (1×H×W×3)."""
    from tandem.training.run import load_run

    home = os.environ.get("TANDEM_DATA_HOME")
    data = load_run(run, Path(home) if home else None)[1]
    records = data.part("test").records or data.part("train").records
    return OnnxModel.open(bundle).pixels_from_files([records[0].path])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="A classifier's run folder (default: the accuracy benchmark's, else "
                                             "train one here).")
    ap.add_argument("--calls", type=int, help="Batch-1 calls timed per variant and thread count (default 300; --quick 20).")
    ap.add_argument("--quick", action="store_true", help="Tiny settings: a smoke run, not figures to quote.")
    args = ap.parse_args()
    calls = args.calls or (20 if args.quick else 300)
    run = args.run or train(args.quick)

    home = os.environ.get("TANDEM_DATA_HOME")
    data_home = Path(home) if home else None
    seconds = Seconds()
    export_log = logging.getLogger("tandem.export")
    export_log.setLevel(logging.DEBUG)
    export_log.addHandler(seconds)
    export_log.propagate = False  # the figures, not the exporter's debug chatter
    bundles: dict[str, Bundle] = {}
    refused: dict[str, str] = {}  # variant key → the export's words, for a variant that failed its check
    for fmt in EXPORTS:
        out = WORK / f"bundle-{fmt}{'-quick' if args.quick else ''}"
        keys = [f"{fmt}-{p}" for p in PRECISIONS[fmt]]
        while True:
            print(f"exporting {run} with onnx,{','.join(keys)} → {out}", flush=True)
            try:
                bundles[fmt] = export_run(run, out, ExportOptions(formats=",".join(["onnx", *keys])), data_home)
                break
            except BundleError as e:  # a variant that fails parity is not written: say why, measure the rest
                failed = next((k for k in keys if str(e).startswith(f"{k}:")), None)
                if failed is None or len(keys) == 1:
                    raise
                print(f"  {e}", flush=True)
                refused[failed] = str(e)
                keys.remove(failed)

    photo = one_photo(bundles["litert"], run)
    variants: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        fmt = key.split("-")[0]
        bundle = bundles["litert" if fmt == "onnx" else fmt]
        v = bundle.manifest.variants.get(key)
        if v is None:
            variants[key] = {"written": False, "why": refused.get(key, "left out by the export (its warning says why)")}
            continue
        entry: dict[str, Any] = {"bytes": bundle.manifest.files[v.file].size, "file": v.file,
                                 "runtime": f"{v.runtime.name} {v.runtime.version}",
                                 "export_seconds": round(seconds.seconds.get(key, float("nan")), 2)}
        if v.quantization is not None:  # litert-int8: the quantiser's recipe, activations and calibration
            entry["quantization"] = v.quantization.model_dump()
        if v.parity is None:
            assert v.spec_check is not None
            entry |= {"spec_ok": v.spec_check.spec_ok, "ops": v.spec_check.ops, "op_types": v.spec_check.op_types,
                      "b1_ms": None, "not_measured": v.spec_check.not_measured}
        else:
            entry |= {"parity_max_abs": v.parity.max_abs, "top1_agreement": v.parity.top1_agreement,
                      "parity_images": v.parity.images, "parity_on": v.parity.on, "b1_ms": {}, "b1_p90_ms": {}}
            for threads in THREADS:
                p50, p90 = b1_ms(open_runner(bundle, key, threads), photo, calls)
                entry["b1_ms"][str(threads)] = round(p50, 3)
                entry["b1_p90_ms"][str(threads)] = round(p90, 3)
                print(f"{key:16} {threads} thread(s): {p50:8.3f} ms (p90 {p90:.3f})", flush=True)
        variants[key] = entry

    ran = {k: v for k, v in variants.items() if v.get("b1_ms")}
    fastest = {str(t): min(ran, key=lambda k: ran[k]["b1_ms"][str(t)]) for t in THREADS} if ran else {}
    sizes = {k: v.get("bytes") for k, v in variants.items()}
    targets = {
        "fp32_parity_le_1e-4": {k: v["parity_max_abs"] <= FP32_MAX_ABS for k, v in ran.items() if k.endswith("fp32")},
        "int8_top1_agreement_ge_0.99": {**{k: (v["top1_agreement"] or 0) >= INT8_AGREEMENT
                                           for k, v in ran.items() if k.endswith("int8")},
                                        **{k: False for k in refused if k.endswith("int8")}},
        "litert_int8_le_0.3x_fp32": (sizes["litert-int8"] / sizes["litert-fp32"] <= LITERT_INT8_SIZE
                                     if sizes.get("litert-int8") and sizes.get("litert-fp32") else None),
    }
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": {p: metadata.version(p) for p in ("torch", "onnxruntime", "ai-edge-litert", "executorch",
                                                      "coremltools")},
        "run": str(run), "quick": args.quick, "calls": calls, "threads": list(THREADS),
        "variants": variants, "fastest_b1": fastest, "targets": targets,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("formats-quick.json" if args.quick else "formats.json")
    path.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(json.dumps({"fastest_b1": fastest, "targets": targets}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
