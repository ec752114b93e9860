"""Run folder → bundle: export fp32, quantize int8, measure both on the held-out test images."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import ValidationError

from tandem.atomic import staged_dir
from tandem.bundle import Bundle, Fingerprint, Manifest, TensorSpec, Variant, write_manifest
from tandem.bundle.runtime import OnnxModel
from tandem.data.pixels import load_pixels, report_skipped
from tandem.errors import BundleError, CheckpointError
from tandem.export.formats import CLASSIFIER, EMBEDDING, IMAGE_TO_IMAGE, Tools, parse_formats
from tandem.export.onnx_export import INPUT, OUTPUTS, export_onnx
from tandem.export.quantize import quantize_int8
from tandem.export.timing import log_seconds
from tandem.export.variant_parity import ParityPhotos
from tandem.export.variants import onnx_variants, other_variants
from tandem.models import build_face_net
from tandem.models.mobilenet import EmbeddingNet, NetConfig, PixelModel
from tandem.training import checkpoint, provenance
from tandem.training.accuracy import balanced_accuracy, topk_accuracy
from tandem.training.run import load_history, load_run
from tandem.training.stylize import is_stylize_run
from tandem.training.trainer import preprocess_spec

if TYPE_CHECKING:
    from tandem.models import FaceNet

log = logging.getLogger(__name__)
for _name in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
    logging.getLogger(_name).setLevel(logging.ERROR)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


@dataclass(frozen=True)
class ExportOptions:
    name: str | None = None
    calibration_images: int = 256
    seed: int = 0
    # "onnx,litert" and so on (export/formats.py); None: every format whose tools are installed.
    formats: str | None = None
    # The LiteRT converter venv's Python (TANDEM_LITERT_PYTHON); None: .venv-litert beside Tandem's venv.
    litert_python: Path | None = None


def _calibration_pixels(train_x: np.ndarray, train_y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` training images, spread over the classes round-robin."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(train_y == c)).tolist() for c in np.unique(train_y)]
    picked: list[int] = []
    while len(picked) < n and any(per_class):
        for idx in per_class:
            if idx and len(picked) < n:
                picked.append(idx.pop())
    return train_x[sorted(picked)]


def load_net(run_dir: Path) -> tuple[FaceNet, dict]:
    path = run_dir / checkpoint.BEST
    path = path if path.exists() else run_dir / checkpoint.LAST
    state = checkpoint.load(path)
    try:
        net = build_face_net(NetConfig.from_dict(state["net"]), pretrained=False)
        net.load_state_dict(state["model"])
        state["epoch"], state["best_epoch"], state["best_val_acc"]  # a missing key fails here, not later
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the checkpoint does not fit this Tandem's network ({e}); train again") from e
    return net.eval(), state


def _check_out(run_dir: Path, out: Path) -> None:
    run, target = run_dir.resolve(), out.resolve()
    if target == run or target in run.parents or run in target.parents:
        raise BundleError(f"--out {out} overlaps the run folder {run_dir}; export to a folder of its own, e.g. bundles/NAME")
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / "manifest.json").exists())):
        raise BundleError(
            f"--out {out} exists and is not a bundle; Tandem replaces only earlier bundles. "
            "Choose a new folder or remove it"
        )


@torch.no_grad()
def _torch_outputs(net: EmbeddingNet, pixels: np.ndarray, batch: int = 128) -> list[np.ndarray]:
    model = PixelModel(net).eval()
    parts = [model(torch.from_numpy(pixels[i : i + batch])) for i in range(0, len(pixels), batch)]
    return [torch.cat([p[k] for p in parts]).numpy() for k in range(len(OUTPUTS))]


def export_run(run_dir: Path, out: Path, options: ExportOptions = ExportOptions(),
               data_home: Path | None = None) -> Bundle:
    """``data_home``: where this machine keeps LFW (TANDEM_DATA_HOME), for an LFW run trained elsewhere."""
    _check_out(run_dir, out)
    tools = Tools.find(options.litert_python)
    stylize = is_stylize_run(run_dir)
    if stylize:
        keys = parse_formats(options.formats, tools, IMAGE_TO_IMAGE)  # says so if it asks for what is not made
        from tandem.export.stylize_export import export_stylize_run

        return export_stylize_run(run_dir, out, options.name, keys, tools, asked=options.formats is not None)
    cfg, data = load_run(run_dir, data_home)
    name = options.name or cfg.name
    net, state = load_net(run_dir)
    variant_keys = parse_formats(options.formats, tools, EMBEDDING if cfg.objective == "embed" else CLASSIFIER)
    if cfg.objective == "embed":
        from tandem.export.embed_export import VariantRequest, export_embed_run

        return export_embed_run(run_dir, out, cfg, data, net, state, name, options.calibration_images,
                                VariantRequest(variant_keys, tools, asked=options.formats is not None))
    if not isinstance(net, EmbeddingNet):
        raise CheckpointError(f"{run_dir}: a {net.cfg.arch} network is a face embedding, but the run is a classifier")
    spec = preprocess_spec(cfg, data, net.cfg)
    train_cat, test_cat = data.part("train"), data.part("test")
    skipped: list[str] = []  # reported once for both parts
    train_x, train_y, _ = load_pixels(train_cat, spec, skipped=skipped)
    test_x, test_y = (load_pixels(test_cat, spec, skipped=skipped)[:2]) if test_cat.records else (train_x[:0], train_y[:0])
    report_skipped(data.root, skipped, len(train_cat.records) + len(test_cat.records), "training and test")
    history = load_history(run_dir)

    with staged_dir(out) as stage:
        start = time.perf_counter()
        export_onnx(net, stage / FP32_FILE, spec.height, spec.width)
        log_seconds(log, "onnx-fp32", time.perf_counter() - start)
        calibration = _calibration_pixels(train_x, train_y, options.calibration_images, options.seed)
        start = time.perf_counter()
        quantize_int8(stage / FP32_FILE, stage / INT8_FILE, calibration)
        log_seconds(log, "onnx-int8", time.perf_counter() - start)

        parity_split: Literal["test", "train"] = "test" if len(test_x) else "train"
        parity_x = test_x if len(test_x) else train_x[:64]
        fp32 = OnnxModel(stage / FP32_FILE, spec, data.classes, "fp32")
        int8 = OnnxModel(stage / INT8_FILE, spec, data.classes, "int8")
        out32 = fp32.run(parity_x)
        ref = _torch_outputs(net, parity_x)
        max_abs = max(float(np.abs(out32[n] - r).max()) for n, r in zip(OUTPUTS, ref, strict=True))
        if not np.isfinite(max_abs) or not np.isfinite(out32["probabilities"]).all():
            raise BundleError(f"{run_dir}: the model outputs NaN or infinity; training diverged — train again with a lower --lr")
        selection = "val" if data.split["val"] else "train"
        metrics: dict[str, float | int] = {
            "max_abs_onnx_torch": max_abs, "test_images": len(test_y), "best_epoch": int(state["best_epoch"]),
            f"{selection}_top1": float(state["best_val_acc"]),
        }
        out8_parity = int8.run(parity_x)
        if len(test_y):
            out8 = out8_parity if parity_x is test_x else int8.run(test_x)
            for tag, out_p in (("fp32", out32), ("int8", out8)):
                p = out_p["probabilities"]
                metrics[f"test_top1_{tag}"] = topk_accuracy(p, test_y, 1)
                metrics[f"test_top5_{tag}"] = topk_accuracy(p, test_y, 5)
                metrics[f"test_balanced_{tag}"] = balanced_accuracy(p.argmax(1), test_y)

        n_cls = len(data.classes)
        source = "lfw" if data.source == "lfw" else f"folder:{Path(data.root).name}"
        inputs = [TensorSpec(name=INPUT, dtype="uint8", shape=[-1, spec.height, spec.width, 3])]
        outputs = [TensorSpec(name="probabilities", dtype="float32", shape=[-1, n_cls]),
                   TensorSpec(name="embedding", dtype="float32", shape=[-1, net.cfg.embedding_dim])]
        variants: dict[str, Variant] = {}
        if variant_keys:
            photos = ParityPhotos(parity_x, parity_split, ref, 0.0)
            variants = onnx_variants(inputs, outputs, {"fp32": FP32_FILE, "int8": INT8_FILE},
                                     {"fp32": out32, "int8": out8_parity}, photos)
            onnx_int8 = variants["onnx-int8"].parity
            photos = ParityPhotos(parity_x, parity_split, ref, (onnx_int8.top1_agreement if onnx_int8 else None) or 0.0)
            variants |= other_variants(PixelModel(net).eval(), stage, variant_keys, tools, spec, data.classes,
                                       outputs, calibration, photos, asked=options.formats is not None)
        try:
            manifest = Manifest(
                name=name,
                inputs=inputs,
                outputs=outputs,
                preprocessing=spec,
                labels=data.classes,
                models={"fp32": FP32_FILE, "int8": INT8_FILE},
                metrics=metrics,
                fingerprint=Fingerprint(data=data.fingerprint, config=_sha256_json(cfg.identity())),
                training={"data": source, "epochs": len(history), "exported_epoch": state["epoch"],
                          "selected_on": selection, "parity_on": parity_split, "seed": cfg.seed,
                          "subset": cfg.subset, "min_faces": cfg.min_faces, "train_images": len(train_y),
                          "network": net.cfg.to_dict(), **provenance.manifest_entry(run_dir)},
                variants=variants,
            )
        except ValidationError as e:
            raise BundleError(f"cannot write the manifest: {e}") from e
        write_manifest(stage, manifest)
        Bundle.load(stage)  # verify what was written before it replaces anything
    return Bundle.load(out)


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
