"""LFW accuracy, size and latency benchmark for the celebmatch bundle.

    make bench-accuracy        (or: .venv/bin/python bench/accuracy.py [--epochs N])

Trains on the 47 people with >= 20 photos (a fixed, seeded 70/10/20 split), exports the bundle
and measures, in one run and on the same split: fp32 and int8 test accuracy, the eigenfaces
baseline (PCA + RBF SVC, as in scikit-learn's face recognition example), enrolment-only top-1 on
people the network never saw, file sizes, ONNX/torch parity, and ONNX Runtime latency. A run
folder left by an interrupted benchmark is resumed. Writes bench/results/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tandem.data.lfw import load_lfw
from tandem.data.pixels import load_pixels
from tandem.export.exporter import ExportOptions, export_run, load_net
from tandem.models.mobilenet import count_parameters
from tandem.settings import get_settings
from tandem.training import checkpoint
from tandem.training.accuracy import topk_accuracy
from tandem.training.embed import FINE_TUNE_LR
from tandem.training.run import TrainConfig, load_run
from tandem.training.trainer import train

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "accuracy"
RESULTS = HERE / "results"
# The dlib backbone is fine-tuned briefly: validation keeps the pretrained network if no epoch beats it.
DLIB_EPOCHS = 2
console = Console()


def eigenfaces(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int) -> float:
    from scipy.stats import loguniform
    from sklearn.decomposition import PCA
    from sklearn.model_selection import RandomizedSearchCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def gray(x: np.ndarray) -> np.ndarray:
        g = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return g.reshape(len(x), -1) / 255.0

    scaler = StandardScaler().fit(gray(train_x))
    xtr, xte = scaler.transform(gray(train_x)), scaler.transform(gray(test_x))
    pca = PCA(n_components=150, svd_solver="randomized", whiten=True, random_state=seed).fit(xtr)
    search = RandomizedSearchCV(
        SVC(kernel="rbf", class_weight="balanced"),
        {"C": loguniform(1e3, 1e5), "gamma": loguniform(1e-4, 1e-1)},
        n_iter=10, random_state=seed,
    ).fit(pca.transform(xtr), train_y)
    return float((search.predict(pca.transform(xte)) == test_y).mean())


def enrolment_unseen(bundle: Bundle, seed: int) -> tuple[float, int, int]:
    """People with 10–19 photos (none of them trained on): gallery from half, queries from the rest."""
    unseen = load_lfw(get_settings().require_data_home(), min_faces=10, max_faces=20)
    model = OnnxModel.open(bundle)
    pixels, labels, _ = load_pixels(unseen, bundle.manifest.preprocessing.model_copy(update={"crop": unseen.crop}))
    emb = model.run(pixels)["embedding"]
    rng = np.random.default_rng(seed)
    gallery, queries, query_labels = [], [], []
    for c in range(len(unseen.classes)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half = len(idx) // 2
        g = emb[idx[:half]].mean(0)
        gallery.append(g / np.linalg.norm(g))
        queries.append(emb[idx[half:]])
        query_labels += [c] * (len(idx) - half)
    sims = np.concatenate(queries) @ np.stack(gallery).T
    return topk_accuracy(sims, np.array(query_labels), 1), len(unseen.classes), len(query_labels)


def latency_ms(model: OnnxModel, pixels: np.ndarray, batch: int, repeats: int) -> float:
    """Median milliseconds per image at this batch size."""
    x = np.ascontiguousarray(pixels[:batch])
    batch = len(x)
    for _ in range(5):
        model.session.run(None, {model.input_name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.session.run(None, {model.input_name: x})
        times.append((time.perf_counter() - t0) * 1000 / batch)
    return statistics.median(times)


def predict_cli_seconds(bundle_dir: Path, photo: Path) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tandem", "predict", str(bundle_dir), str(photo), "--json"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def open_set_part(args: argparse.Namespace) -> dict:
    """Issue 15's figures: the full face embedding and the demo's, each on people it never saw, against
    eigenfaces on the same photos (bench/open_set.py says how each is measured)."""
    from open_set import ann_recall, detection, evaluate  # bench/open_set.py: the script's folder is on sys.path

    from tandem.apps.celebmatch.demo import run_demo
    from tandem.training.embed import train_embed

    dlib = args.backbone == "dlib"
    epochs = args.embed_epochs or (DLIB_EPOCHS if dlib else 30)
    size = 150 if dlib else args.size
    run_dir = args.embed_run or WORK / f"embed-{args.backbone}-e{epochs}-s{args.seed}"
    bundle_dir = WORK / f"embed-bundle-{run_dir.name}"
    if dlib:
        cfg = TrainConfig(data="lfw", name="celebmatch", out=run_dir, min_faces=1, epochs=epochs, seed=args.seed,
                          device=args.device, objective="embed", backbone="dlib", align_size=150, lr=FINE_TUNE_LR,
                          region_views=0.2)
    else:
        cfg = TrainConfig(data="lfw", name="celebmatch", out=run_dir, min_faces=1, epochs=epochs, seed=args.seed,
                          device=args.device, stem_stride=2, objective="embed", teacher="dlib", align_size=size,
                          region_views=0.2, arc_weight=0.1)
    if args.embed_run is None or not (run_dir / checkpoint.BEST).exists():
        console.print(f"[bold]training[/] the face embedding ({args.backbone}), {epochs} epochs at {size}×{size}")
        train_embed(cfg, resume=(run_dir / checkpoint.LAST).exists(), data_home=get_settings().data_home)
    history = json.loads((run_dir / "history.json").read_text())
    export_run(run_dir, bundle_dir, ExportOptions(name="celebmatch"), get_settings().data_home)
    full = evaluate(run_dir, bundle_dir, args.seed)
    console.print("[bold]demo[/]: `tandem demo` as a user runs it, then the same measures")
    demo_dir = WORK / "demo"
    old = json.loads((RESULTS / "accuracy.json").read_text()) if (RESULTS / "accuracy.json").exists() else {}
    if args.reuse_demo and (demo_dir / "bundle" / "gallery.npz").exists() and "demo_seconds" in old:
        demo_seconds = old["demo_seconds"]  # measured when that demo ran
    else:
        if demo_dir.exists():
            shutil.rmtree(demo_dir)
        t0 = time.perf_counter()
        run_demo(demo_dir, seed=args.seed, data_home=get_settings().data_home)
        demo_seconds = time.perf_counter() - t0
    demo = evaluate(demo_dir / "run", demo_dir / "bundle", args.seed, regions=False)
    det = {**detection(bundle_dir=bundle_dir), **ann_recall(run_dir, bundle_dir, args.seed)}
    bundle = Bundle.load(bundle_dir)
    fp32, int8 = OnnxModel.open(bundle, "fp32"), OnnxModel.open(bundle, "int8")
    px = np.zeros((32, bundle.manifest.preprocessing.height, bundle.manifest.preprocessing.width, 3), np.uint8)
    keys = ("verif_acc", "verif_auc", "tar_at_far1", "own_verif_acc", "own_verif_auc", "own_tar_at_far1", "open_top1",
            "open_top1_k1", "open_top1_unseen_gallery", "reject_at_far1", "region_top1_eyes", "region_top1_nose", "region_top1_mouth")
    out: dict = {k: full["fp32"][k] for k in keys if k in full["fp32"]}
    for kind in ("int8", "eigenfaces"):
        out.update({f"{kind}_{k}": full[kind][k] for k in keys if k in full[kind]})
    out["region_top1"] = {v: full["fp32"][f"region_top1_{v}"] for v in ("eyes", "nose", "mouth")}
    out.update(det)
    out.update({"demo_open_top1": demo["fp32"]["open_top1"], "demo_verif_acc": demo["fp32"]["verif_acc"],
                "demo_open_top1_k1": demo["fp32"]["open_top1_k1"],
                "demo_open_top1_unseen_gallery": demo["fp32"].get("open_top1_unseen_gallery"),
                "demo_eigenfaces_open_top1_unseen_gallery": demo["eigenfaces"].get("open_top1_unseen_gallery"), "demo_reject_at_far1": demo["fp32"]["reject_at_far1"],
                "demo_eigenfaces_open_top1": demo["eigenfaces"]["open_top1"],
                "demo_eigenfaces_verif_acc": demo["eigenfaces"]["verif_acc"], "demo_seconds": round(demo_seconds, 1),
                "demo_distractors": demo["fp32"]["distractors"]})
    out["open_set"] = {"full": full, "demo": demo}
    out.update({"embed_fp32_bytes": bundle.manifest.files["model.onnx"].size,
                "embed_int8_bytes": bundle.manifest.files["model.int8.onnx"].size,
                "embed_fp32_b1_ms": latency_ms(fp32, px, 1, 200), "embed_int8_b1_ms": latency_ms(int8, px, 1, 200),
                "embed_max_abs_onnx_torch": bundle.manifest.metrics["max_abs_onnx_torch"],
                "embed_epochs": len(history), "embed_train_seconds": round(sum(h["seconds"] for h in history), 1),
                "embed_device": "+".join(sorted({h.get("device", "cpu") for h in history})),
                "embed_size": bundle.manifest.preprocessing.height, "embed_backbone": args.backbone,
                "embed_teacher": "none" if dlib else "dlib",
                "embed_best_epoch": int(bundle.manifest.metrics["best_epoch"])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "classify", "open-set"), default="all",
                    help="classify: the 47-way classifier (the keys from before issue 15); open-set: the face "
                         "embedding and the demo on people never trained on")
    ap.add_argument("--embed-run", type=Path, help="an existing embed run folder to measure (else one is trained)")
    ap.add_argument("--backbone", choices=("dlib", "mobile"), default="dlib",
                    help="dlib: dlib's face ResNet fine-tuned (the default); mobile: the small network from scratch")
    ap.add_argument("--embed-epochs", type=int, help=f"default {DLIB_EPOCHS} for dlib, 30 for mobile")
    ap.add_argument("--size", type=int, default=80, help="the mobile face embedding's aligned crop size")
    ap.add_argument("--reuse-demo", action="store_true", help="measure the demo run left by an earlier benchmark "
                    "instead of running `tandem demo` again (its seconds are those measured then)")
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--val-fraction", type=float, default=0.0,
                    help="0 trains on train+validation (the test split is the same either way)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fresh", action="store_true", help="discard an earlier run folder and train anew")
    ap.add_argument("--train-only", action="store_true",
                    help="only train (e.g. on a GPU machine); a later run without it picks the run folder up")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "accuracy.json"
    if args.part in ("all", "open-set"):
        merged = {**(json.loads(path.read_text()) if path.exists() else {}), **open_set_part(args)}
        path.write_text(json.dumps(merged, indent=2) + "\n")
        show_open_set(merged)
        if args.part == "open-set":
            return

    tag = f"e{args.epochs}-v{args.val_fraction:g}-s{args.seed}"
    run_dir, bundle_dir = WORK / f"run-{tag}", WORK / f"bundle-{tag}"
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = TrainConfig(data="lfw", name="celebmatch", out=run_dir, min_faces=20, epochs=args.epochs,
                      seed=args.seed, device=args.device, val_fraction=args.val_fraction)
    resume = (run_dir / checkpoint.LAST).exists()
    console.print(f"[bold]training[/] {args.epochs} epochs on LFW ≥ 20 photos{' (resuming)' if resume else ''}")
    train(cfg, resume=resume, data_home=get_settings().data_home)
    if args.train_only:
        console.print(f"trained: {run_dir}")
        return
    history = json.loads((run_dir / "history.json").read_text())
    train_seconds = sum(h["seconds"] for h in history)

    console.print("[bold]exporting[/] fp32 + int8 and measuring on the test split")
    bundle = export_run(run_dir, bundle_dir, ExportOptions(name="celebmatch"), get_settings().data_home)
    m = bundle.manifest.metrics

    console.print("[bold]eigenfaces[/] baseline on the same split")
    _, data = load_run(run_dir, get_settings().data_home)
    spec = bundle.manifest.preprocessing
    fit_cat = data.catalog().subset(data.split["train"] + data.split["val"])
    fit_x, fit_y, _ = load_pixels(fit_cat, spec)
    test_x, test_y, _ = load_pixels(data.part("test"), spec)
    eigen = eigenfaces(fit_x, fit_y, test_x, test_y, args.seed)

    console.print("[bold]enrolment[/] on people never trained on")
    enrol_top1, enrol_ids, enrol_queries = enrolment_unseen(bundle, args.seed)

    console.print("[bold]latency[/] with ONNX Runtime")
    fp32, int8 = OnnxModel.open(bundle, "fp32"), OnnxModel.open(bundle, "int8")
    lat = {f"{tag}_b{b}_ms": latency_ms(model, test_x, b, 200 if b == 1 else 30)
           for tag, model in (("fp32", fp32), ("int8", int8)) for b in (1, 32)}
    cli_s = predict_cli_seconds(bundle_dir, data.part("test").records[0].path)

    fp32_bytes = bundle.manifest.files["model.onnx"].size
    int8_bytes = bundle.manifest.files["model.int8.onnx"].size
    results = {
        "eigenfaces_top1": eigen,
        "fp32_top1": m["test_top1_fp32"], "fp32_top5": m["test_top5_fp32"], "fp32_balanced": m["test_balanced_fp32"],
        "int8_top1": m["test_top1_int8"], "int8_top5": m["test_top5_int8"], "int8_balanced": m["test_balanced_int8"],
        "enrol_unseen_top1": enrol_top1, "enrol_unseen_identities": enrol_ids, "enrol_unseen_queries": enrol_queries,
        "fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "int8_size_ratio": int8_bytes / fp32_bytes,
        **lat, "int8_b1_latency_ratio": lat["int8_b1_ms"] / lat["fp32_b1_ms"],
        "max_abs_onnx_torch": m["max_abs_onnx_torch"],
        "train_seconds": train_seconds, "epochs": args.epochs, "device": "+".join(sorted({h.get("device", "cpu") for h in history})), "val_fraction": args.val_fraction,
        "predict_cli_seconds": cli_s,
        "classes": len(data.classes), "train_images": len(data.split["train"]), "val_images": len(data.split["val"]),
        "test_images": len(test_y), "parameters": count_parameters(load_net(run_dir)[0]),
    }
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **results}, indent=2) + "\n")
    for png in ("curves.png", "confusion.png"):
        shutil.copy(run_dir / png, RESULTS / f"accuracy_{png}")

    targets = {
        "fp32_top1": ("≥ 0.93", results["fp32_top1"] >= 0.93),
        "int8_top1": ("within 1 pt of fp32", results["fp32_top1"] - results["int8_top1"] <= 0.01),
        "int8_size_ratio": ("≤ 0.3", results["int8_size_ratio"] <= 0.3),
        "int8_b1_latency_ratio": ("≤ 0.8", results["int8_b1_latency_ratio"] <= 0.8),
        "max_abs_onnx_torch": ("≤ 1e-4", results["max_abs_onnx_torch"] <= 1e-4),
    }
    table = Table(title=f"LFW ≥ 20 photos: {results['classes']} identities, {results['test_images']} test images")
    for col in ("measure", "value", "target", "met"):
        table.add_column(col)
    for key, value in results.items():
        target, met = targets.get(key, ("", None))
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown, target, "" if met is None else ("[green]yes[/]" if met else "[red]no[/]"))
    console.print(table)
    console.print(f"wrote {RESULTS / 'accuracy.json'}")


def show_open_set(r: dict) -> None:
    targets = {
        "verif_acc": ("≥ 0.90", r["verif_acc"] >= 0.90),
        "open_top1": ("≥ 0.80", r["open_top1"] >= 0.80),
        "reject_at_far1": ("≥ 0.80", r["reject_at_far1"] >= 0.80),
        "demo_open_top1": ("≥ 0.60 and ≥ eigenfaces + 0.15",
                           r["demo_open_top1"] >= 0.60 and r["demo_open_top1"] >= r["demo_eigenfaces_open_top1"] + 0.15),
    }
    for k in ("verif_acc", "open_top1", "reject_at_far1", "tar_at_far1", "open_top1_k1"):
        if f"int8_{k}" in r:
            targets[f"int8_{k}"] = ("within 1 pt of fp32", abs(r[k] - r[f"int8_{k}"]) <= 0.01)
    table = Table(title="celebmatch on people never trained on (LFW pair folds 9–10 people)")
    for col in ("measure", "value", "target", "met"):
        table.add_column(col)
    for key, value in r.items():
        if not isinstance(value, (int, float, str)) or not any(key.startswith(p) for p in ("verif", "own_", "open_top1", "reject", "region_top1_", "int8_", "eigenfaces_",
                                               "demo_", "detect", "align", "embed_", "tar_at")):
            continue
        target, met = targets.get(key, ("", None))
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown, target, "" if met is None else ("[green]yes[/]" if met else "[red]no[/]"))
    console.print(table)


if __name__ == "__main__":
    main()
