"""Deep art (issue 18): how much faster a distilled effect runs than its teacher, and how close it comes.

    .venv/bin/python bench/deepart.py [--effect stylization] [--style swirl] [--max-images 300] [--epochs 15] [--quick]
                                      [--browser [--browser-seconds 5]] [--browser-only] [--merge]

For each --effect: trains `tandem train --task stylize` on LFW (--max-images photos at 256×256, a tenth
held out), exports the bundle, then on one real LFW photo resized to 512×512 times the teacher (OpenCV,
cv2.setNumThreads) and the student (ONNX Runtime fp32 and int8, intra-op threads) with 1 and 2 threads,
interleaved, medians of --reps calls. PSNR and SSIM are the export's (the student's rounded pixels
against the teacher's on the held-out photos). Each --style (a picture drawn by bench/styles.py) trains a
neural style the same way (`--style-image`); it has no teacher, so its teacher_ms, speedup, psnr_db and
ssim are null and its style_loss and content_loss (the export's, on the held-out photos) say how close it
comes. Writes bench/results/deepart.json:

    {"effects": {NAME: {"teacher_ms", "student_ms", "student_int8_ms", "speedup", "psnr_db", "ssim",
                        "device_fps", "cloud_fps", "cloud_frame_ms", "bytes_fp32", "bytes_int8",
                        "train_seconds", ...}},
     "train_seconds": total, "machine": ..., "null": {key: why}}

``*_ms`` are {"1": ms, "2": ms} by thread count. With --browser each bundle is also released to a real
server and run live by the browser app's deep-art view in Chromium (bench/deepart_browser.py): device_fps
{"320x240": fps, "640x480": fps} on the device (onnxruntime-web, WASM, 2 threads), cloud_fps and
cloud_frame_ms {"loopback": measured, "2g".."wifi": projected from it with the advisor's profiles};
without it they are null ("null" says why). --browser-only measures just that for the bundles of the last
run (bench/work/deepart) and writes it into the existing results.
Targets (issue 18): speedup >= 10, psnr_db >= 30, ssim >= 0.9, bytes_int8 <= 2 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from deepart_browser import browser_figures  # bench/deepart_browser.py, as styles
from PIL import Image
from rich.console import Console
from rich.table import Table
from styles import STYLES, write_style  # bench/styles.py: run as `python bench/deepart.py`

from tandem.bundle import Bundle
from tandem.effects import EFFECTS
from tandem.export.exporter import export_run
from tandem.settings import get_settings
from tandem.training.stylize import NEURAL_STYLE, StylizeConfig, train_stylize

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "deepart"
RESULTS = HERE / "results"
SIDE = 512
THREADS = (1, 2)
TARGETS = {"speedup": 10.0, "psnr_db": 30.0, "ssim": 0.9, "bytes_int8": 2_000_000}
BROWSER = "not measured: run bench/deepart.py with --browser (or --browser-only after a run)"
NULL = {"device_fps": BROWSER, "cloud_fps": BROWSER, "cloud_frame_ms": BROWSER}
console = Console(width=130)


def photo() -> np.ndarray:
    lfw = get_settings().require_data_home() / "lfw_home" / "lfw_funneled"
    path = sorted((lfw / "Tony_Blair").glob("*.jpg"))[0]
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.uint8)


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def timings(effect: str, bundle: Bundle, pixels: np.ndarray, reps: int) -> dict[str, dict[str, float] | None]:
    """Median milliseconds per call, by thread count, the teacher and the students' calls interleaved
    (a neural style has no teacher: its teacher_ms is None)."""
    teach = EFFECTS.get(effect)
    batch = pixels[None]
    out: dict[str, dict[str, float]] = {"teacher_ms": {}, "student_ms": {}, "student_int8_ms": {}}
    for n in THREADS:
        cv2.setNumThreads(n)
        runs = {"teacher_ms": lambda: teach(pixels)} if teach is not None else {}
        for key, precision in (("student_ms", "fp32"), ("student_int8_ms", "int8")):
            if precision in bundle.manifest.models:
                s = session(bundle.model_path(precision), n)  # type: ignore[arg-type]
                runs[key] = lambda s=s: s.run(None, {"pixels": batch})
        times: dict[str, list[float]] = {k: [] for k in runs}
        for fn in runs.values():
            fn()  # warm up
        for _ in range(reps):
            for key, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) * 1000)
        for key, ts in times.items():
            out[key][str(n)] = round(statistics.median(ts), 2)
    cv2.setNumThreads(-1)
    return {k: (v or None) for k, v in out.items()}


def bench_effect(effect: str, args: argparse.Namespace, pixels: np.ndarray, style: str | None = None) -> dict:
    """A teacher ``effect``, or with ``style`` a neural style learned from that drawn picture."""
    key = effect if style is None else f"style-{style}"
    run, bundle_dir = WORK / f"run-{key}", WORK / f"bundle-{key}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = StylizeConfig(data="lfw", out=run, effect=effect, name=f"deepart-{key}", max_images=args.max_images,
                        epochs=args.epochs, photo_size=256, crop=128, batch_size=16,
                        style_image=None if style is None else str(write_style(style, WORK / "styles")))
    t0 = time.perf_counter()
    result = train_stylize(cfg, show_progress=not args.no_progress, data_home=get_settings().data_home)
    train_seconds = time.perf_counter() - t0
    bundle = export_run(run, bundle_dir, data_home=get_settings().data_home)
    m = bundle.manifest
    ms = timings(effect, bundle, pixels, args.reps)
    teacher_ms, student_ms = ms["teacher_ms"], ms["student_ms"]
    assert student_ms is not None
    speed = None if teacher_ms is None else {n: round(teacher_ms[n] / student_ms[n], 2) for n in student_ms}
    size = {p: m.files[f].size for p, f in m.models.items()}

    def measured(key: str, digits: int) -> float | None:
        return round(float(m.metrics[key]), digits) if key in m.metrics else None

    return {
        "teacher": EFFECTS[effect].teacher if effect in EFFECTS else None,
        "style": style,
        **ms,
        "speedup": speed,
        "psnr_db": measured("psnr_db_fp32", 2),
        "ssim": measured("ssim_fp32", 4),
        # the untouched photo against the teacher: how much of the PSNR the effect's gentleness gives away
        "psnr_db_identity": measured("psnr_db_identity", 2),
        "ssim_identity": measured("ssim_identity", 4),
        "style_loss": measured("style_loss_fp32", 4),
        "content_loss": measured("content_loss_fp32", 4),
        "psnr_db_int8": round(float(m.metrics["psnr_db_int8"]), 2) if "psnr_db_int8" in m.metrics else None,
        "ssim_int8": round(float(m.metrics["ssim_int8"]), 4) if "ssim_int8" in m.metrics else None,
        "int8": m.apps["deepart"]["int8"],
        "device_fps": None, "cloud_fps": None, "cloud_frame_ms": None,
        "bytes_fp32": size["fp32"], "bytes_int8": size.get("int8"),
        "train_seconds": round(train_seconds, 1), "train_images": result.train_images,
        "held_out_images": result.held_out_images, "epochs": result.epochs, "side": SIDE,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effect", action="append", choices=sorted(EFFECTS), help="repeatable; default stylization")
    ap.add_argument("--style", action="append", choices=sorted(STYLES), help="a neural style of this drawn picture "
                    "(bench/styles.py); repeatable")
    ap.add_argument("--max-images", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="60 photos, 2 epochs, 3 calls: a smoke run")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--browser", action="store_true", help="also run each bundle live in Chromium's deep-art page")
    ap.add_argument("--browser-seconds", type=float, default=5.0, help="seconds of frames per browser figure")
    ap.add_argument("--browser-only", action="store_true", help="only the browser figures, for the last run's bundles")
    ap.add_argument("--merge", action="store_true",
                    help="keep the existing results' other effects (measured earlier, each with its own settings)")
    args = ap.parse_args()
    if args.quick:
        args.max_images, args.epochs, args.reps, args.browser_seconds = 60, 2, 3, 2.0
    if args.browser_only:
        browser_only(args.browser_seconds)
        return
    pixels = photo()
    effects = {e: bench_effect(e, args, pixels) for e in args.effect or ([] if args.style else ["stylization"])}
    effects.update({f"style-{s}": bench_effect(NEURAL_STYLE, args, pixels, s) for s in args.style or []})
    table = Table("effect", "teacher ms 1/2 thr", "student ms 1/2", "int8 ms 1/2", "speedup 1/2", "PSNR dB", "SSIM",
                  "style / content loss", "fp32 / int8 bytes", "train s", title=f"deep art at {SIDE}x{SIDE}")
    for name, r in effects.items():
        def pair(d: dict | None) -> str:
            return "-" if d is None else " / ".join(str(d.get(str(n), "-")) for n in THREADS)
        table.add_row(name, pair(r["teacher_ms"]), pair(r["student_ms"]), pair(r["student_int8_ms"]),
                      pair(r["speedup"]), str(r["psnr_db"]), str(r["ssim"]),
                      f"{r['style_loss']} / {r['content_loss']}", f"{r['bytes_fp32']} / {r['bytes_int8']}",
                      str(r["train_seconds"]))
    console.print(table)
    if args.browser:
        for name, r in effects.items():
            r.update(browser_figures(WORK / f"bundle-{name}", WORK, args.browser_seconds))
        print_browser(effects)
    path = RESULTS / "deepart.json"
    if args.merge and path.is_file():
        before = json.loads(path.read_text())
        earlier = before["effects"]
        for r in earlier.values():  # rows from an earlier run say with what settings they were measured
            r.setdefault("settings", before.get("settings"))
        effects = {**{k: v for k, v in earlier.items() if k not in effects}, **effects}
    for r in effects.values():
        r.setdefault("settings", {"max_images": args.max_images, "epochs": args.epochs, "reps": args.reps})
    out = {"effects": effects, "train_seconds": round(sum(r["train_seconds"] for r in effects.values()), 1),
           "train_device": "cpu", "targets": TARGETS, "null": still_null(effects),
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "onnxruntime": ort.__version__,
                       "opencv": cv2.__version__},
           "settings": {"max_images": args.max_images, "epochs": args.epochs, "reps": args.reps, "quick": args.quick}}
    RESULTS.mkdir(exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    console.print(f"wrote {path}")


def still_null(effects: dict[str, dict]) -> dict[str, str]:
    return {k: why for k, why in NULL.items() if any(r.get(k) is None for r in effects.values())}


def print_browser(effects: dict[str, dict]) -> None:
    table = Table("effect", "device fps 320x240 / 640x480", "cloud fps loopback", "cloud ms a frame (projected)",
                  title="deep art live in Chromium")
    for name, r in effects.items():
        projected = ", ".join(f"{n} {ms}" for n, ms in r["cloud_frame_ms"].items())
        table.add_row(name, f"{r['device_fps']['320x240']} / {r['device_fps']['640x480']}",
                      str(r["cloud_fps"]["loopback"]), projected)
    console.print(table)


def browser_only(seconds: float) -> None:
    """The browser figures of the effects in the existing results, from their bundles in bench/work/deepart."""
    path = RESULTS / "deepart.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run bench/deepart.py --browser")
    out = json.loads(path.read_text())
    for name, r in out["effects"].items():
        bundle = WORK / f"bundle-{name}"
        if not (bundle / "manifest.json").is_file():
            raise SystemExit(f"{bundle} is missing (the bundle of {name} in {path}): run bench/deepart.py --browser")
        r.update(browser_figures(bundle, WORK, seconds))
    print_browser(out["effects"])
    out["null"] = still_null(out["effects"])
    path.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
