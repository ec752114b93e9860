"""Run folder → bundle: export fp32, quantize int8, measure both on the held-out test images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tandem.atomic import staged_dir
from tandem.bundle import Bundle, Fingerprint, Manifest, TensorSpec, write_manifest
from tandem.data.pixels import load_pixels
from tandem.errors import BundleError
from tandem.export.onnx_export import INPUT, OUTPUTS, export_onnx
from tandem.export.quantize import quantize_int8
from tandem.metrics import balanced_accuracy, topk_accuracy
from tandem.models.mobilenet import EmbeddingNet, NetConfig, PixelModel
from tandem.runtime import OnnxModel
from tandem.training import checkpoint
from tandem.training.run import load_run
from tandem.training.trainer import preprocess_spec

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


def load_net(run_dir: Path) -> tuple[EmbeddingNet, dict]:
    path = run_dir / checkpoint.BEST
    state = checkpoint.load(path if path.exists() else run_dir / checkpoint.LAST)
    net = EmbeddingNet(NetConfig.from_dict(state["net"]))
    net.load_state_dict(state["model"])
    return net.eval(), state


def export_run(run_dir: Path, out: Path, options: ExportOptions = ExportOptions()) -> Bundle:
    cfg, data = load_run(run_dir)
    net, state = load_net(run_dir)
    spec = preprocess_spec(cfg, data, net.cfg)
    train_x, train_y, _ = load_pixels(data.part("train"), spec)
    test_cat = data.part("test")
    test_x, test_y = (load_pixels(test_cat, spec)[:2]) if test_cat.records else (train_x[:0], train_y[:0])
    if out.resolve() == run_dir.resolve():
        raise BundleError("--out must be a new folder, not the run folder")

    with staged_dir(out) as stage:
        export_onnx(net, stage / FP32_FILE, spec.height, spec.width)
        quantize_int8(stage / FP32_FILE, stage / INT8_FILE, _calibration_pixels(train_x, train_y, options.calibration_images, options.seed))

        parity_x = test_x if len(test_x) else train_x[:64]
        fp32 = OnnxModel(stage / FP32_FILE, spec, data.classes, "fp32")
        int8 = OnnxModel(stage / INT8_FILE, spec, data.classes, "int8")
        out32 = fp32.run(parity_x)
        with torch.no_grad():
            ref = PixelModel(net)(torch.from_numpy(parity_x))
        max_abs = max(float(np.abs(out32[n] - r.numpy()).max()) for n, r in zip(OUTPUTS, ref, strict=True))
        metrics: dict[str, float | int] = {"max_abs_onnx_torch": max_abs, "test_images": int(len(test_y)),
                                           "best_epoch": int(state["best_epoch"]), "val_top1": float(state["best_val_acc"])}
        if len(test_y):
            out8 = int8.run(test_x)
            for tag, out_p in (("fp32", out32), ("int8", out8)):
                p = out_p["probabilities"]
                metrics[f"test_top1_{tag}"] = topk_accuracy(p, test_y, 1)
                metrics[f"test_top5_{tag}"] = topk_accuracy(p, test_y, 5)
                metrics[f"test_balanced_{tag}"] = balanced_accuracy(p.argmax(1), test_y)

        n_cls = len(data.classes)
        manifest = Manifest(
            name=options.name or cfg.name,
            inputs=[TensorSpec(name=INPUT, dtype="uint8", shape=[-1, spec.height, spec.width, 3])],
            outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, n_cls]),
                     TensorSpec(name="embedding", dtype="float32", shape=[-1, net.cfg.embedding_dim])],
            preprocessing=spec,
            labels=data.classes,
            models={"fp32": FP32_FILE, "int8": INT8_FILE},
            metrics=metrics,
            fingerprint=Fingerprint(data=data.fingerprint, config=_sha256_json(cfg.identity())),
            training={"data": data.source, "epochs": state["epoch"], "seed": cfg.seed, "subset": cfg.subset,
                      "min_faces": cfg.min_faces, "train_images": int(len(train_y)), "network": net.cfg.to_dict()},
        )
        write_manifest(stage, manifest)
    return Bundle.load(out)


def _sha256_json(obj: object) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
