"""An embed run (`tandem train --objective embed`) → a face-embedding bundle.

Besides the fp32 and int8 networks the bundle holds what matching a stranger's photo needs on any
runtime (its ``apps.faces`` entry, docs/bundle.md): the landmark network, the alignment (template,
crop size), the region boxes, the calibration curves (whole face and each region) and the embeddings
of validation people that set the "no close match" threshold for whatever gallery gets enrolled.
Metrics are measured here on people the network never trained on.
"""

from __future__ import annotations

import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from tandem import atomic
from tandem.atomic import staged_dir
from tandem.bundle import Bundle, Fingerprint, Manifest, TensorSpec, Variant, write_manifest
from tandem.bundle.preprocess import CropSpec, NormalizeSpec, PreprocessSpec
from tandem.bundle.runtime import OnnxModel
from tandem.data.catalog import ImageCatalog
from tandem.data.faces import face_box
from tandem.data.lfw_pairs import read_pairs
from tandem.errors import BundleError
from tandem.export.formats import Tools
from tandem.export.onnx_export import INPUT, write_onnx
from tandem.export.quantize import quantize_int8
from tandem.export.variant_parity import ParityPhotos
from tandem.export.variants import onnx_variants, other_variants
from tandem.faces import calibration, metrics
from tandem.faces.align import AlignSpec, region_boxes, region_views
from tandem.training import provenance
from tandem.training.embed import HELD_OUT_FOLDS, LANDMARKS, FaceSet, landmarker, load_faces
from tandem.training.run import RunData, TrainConfig, load_history

if TYPE_CHECKING:
    from tandem.models import FaceNet

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
IMPOSTORS_FILE = "impostors.npz"
APP = "faces"
MAX_IMPOSTORS = 2000
FAR = 0.01


class PixelEmbedder(nn.Module):
    """uint8 NHWC pixels of aligned faces in, a unit-length embedding out; with ``whiten`` (mean,
    matrix), the unit embedding is whitened and normalised again inside the graph."""

    w_mean: torch.Tensor  # buffers, registered only with ``whiten``
    w_matrix: torch.Tensor

    def __init__(self, net: FaceNet, whiten: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.net = net
        self.whiten = whiten is not None
        if whiten is not None:
            self.register_buffer("w_mean", torch.from_numpy(whiten[0].astype(np.float32)))
            self.register_buffer("w_matrix", torch.from_numpy(whiten[1].astype(np.float32)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        e = nn.functional.normalize(self.net(x)[1], dim=1)
        if self.whiten:
            e = nn.functional.normalize((e - self.w_mean) @ self.w_matrix, dim=1)
        return e


@dataclass(frozen=True)
class VariantRequest:
    """The variants an export was asked for (formats.parse_formats: fp32 ones for a face embedding), the tools
    that make them, and whether the user named them (--formats: a failure stops the export)."""

    keys: frozenset[str] = frozenset()
    tools: Tools | None = None
    asked: bool = False


# Parity photos of a face embedding's variants: up to this many of the run's test faces (each variant runs
# them one a call, as phones do).
PARITY_PHOTOS = 64

WHITEN_PHOTOS = 3000
WHITEN_SHRINK = 1e-3


def whitening(net: FaceNet, faces: FaceSet) -> tuple[np.ndarray, np.ndarray] | None:
    """PCA whitening of the unit embeddings of training photos (mean, symmetric matrix), shrunk by
    ``WHITEN_SHRINK``. A distilled student spreads people along few directions; whitening evens them
    out, as eigenfaces does. Measured on the 30-epoch CPU model: open-set top-1 with 4,697 trained
    distractors 0.553 → 0.610, in a gallery of never-trained people 0.725 → 0.766, verification
    0.928 → 0.924 (own pairs). None when there are too few photos (under 4 per dimension) to
    estimate the covariance."""
    if len(faces.pixels) < 4 * net.cfg.embedding_dim:
        return None
    with torch.no_grad():
        e = PixelEmbedder(net).eval()(torch.from_numpy(faces.pixels)).numpy().astype(np.float64)
    mean = e.mean(0)
    cov = np.cov((e - mean).T) + WHITEN_SHRINK * np.eye(e.shape[1])
    vals, vecs = np.linalg.eigh(cov)
    return mean, vecs @ np.diag(vals**-0.5) @ vecs.T


def export_embedder(net: FaceNet, path: Path, size: int,
                    whiten: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    model = PixelEmbedder(net, whiten).eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    write_onnx(model, example, path, INPUT, ["embedding"])


def _sample(catalog: ImageCatalog, n: int, seed: int) -> list[int]:
    """Up to ``n`` records spread over the people, round-robin."""
    rng = np.random.default_rng(seed)
    by: dict[int, list[int]] = {}
    for i, r in enumerate(catalog.records):
        by.setdefault(r.label, []).append(i)
    queues = [rng.permutation(v).tolist() for _, v in sorted(by.items())]
    rng.shuffle(queues)
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return sorted(picked)


def _part_sample(cfg: TrainConfig, data: RunData, part: str, n: int, run_dir: Path) -> FaceSet:
    keep = _sample(data.part(part), n, cfg.seed)
    sub = RunData(**{**data.__dict__, "split": {**data.split, part: [data.split[part][i] for i in keep]}})
    return load_faces(cfg, sub, part, run_dir)


def _pairs_only(data: RunData) -> RunData:
    """For LFW, the test part cut to the photos of the held-out folds' pairs (what the metrics read)."""
    if data.source != "lfw":
        return data
    pairs = read_pairs(data.catalog().root.parent / "pairs.txt")
    wanted = {f for p in pairs if p.fold in HELD_OUT_FOLDS for f in (p.a, p.b)}
    test = [i for i in data.split["test"] if data.files[i] in wanted]
    return RunData(**{**data.__dict__, "split": {**data.split, "test": test}})


def _lfw_pairs_scores(model: OnnxModel, cfg: TrainConfig, data: RunData, test: FaceSet) -> tuple | None:
    """Scores, same-flags and folds of LFW's pairs in the held-out folds, when the run is on LFW."""
    if data.source != "lfw":
        return None
    pairs = read_pairs(data.catalog().root.parent / "pairs.txt")
    at = {f: i for i, f in enumerate(test.files)}
    use = [p for p in pairs if p.fold in HELD_OUT_FOLDS and p.a in at and p.b in at]
    if not use:
        return None
    e = model.run(test.pixels)["embedding"]
    s = np.array([float(e[at[p.a]] @ e[at[p.b]]) for p in use])
    return s, np.array([p.same for p in use]), np.array([p.fold for p in use])


def no_detect_crop(data: RunData) -> CropSpec:
    """The crop that ``--no-detect`` and the generic tensor protocols use: for data whose faces sit in
    a fixed place (LFW), that place; otherwise the centre."""
    catalog = data.catalog()
    box = face_box(catalog)
    if box is None:
        return CropSpec(mode="center")
    # Where the detector finds LFW's faces: the landmark network starts from there.
    x0, y0, x1, y1 = box
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    return CropSpec(mode="box", box=(round(max(0.0, cx - side / 2), 4), round(max(0.0, cy - side / 2), 4),
                                     round(min(1.0, cx + side / 2), 4), round(min(1.0, cy + side / 2), 4)))


def export_embed_run(run_dir: Path, out: Path, cfg: TrainConfig, data: RunData, net: FaceNet, state: dict,
                     name: str, calibration_images: int = 256,
                     request: VariantRequest = VariantRequest()) -> Bundle:
    spec = AlignSpec.from_json(state["align"])
    regions = region_boxes(spec)
    pre = PreprocessSpec(crop=CropSpec(mode="center"), height=spec.height, width=spec.width,
                         normalize_in_graph=NormalizeSpec(mean=net.cfg.mean, std=net.cfg.std))
    landmarker(run_dir)  # the run's landmark network (exported now if the run folder lacks it)
    calib_faces = _part_sample(cfg, data, "train", calibration_images, run_dir)
    # Only the small network is whitened: one trained on millions of faces already spreads people out,
    # and whitening dlib's embeddings by LFW's training photos lowered its verification (measured,
    # folds 9-10: centring alone 0.995 → 0.989).
    white_faces = _part_sample(cfg, data, "train", WHITEN_PHOTOS, run_dir) if net.cfg.arch == "mobile" else None
    white = whitening(net, white_faces) if white_faces is not None else None
    val = load_faces(cfg, data, "val", run_dir)
    test = load_faces(cfg, _pairs_only(data), "test", run_dir)
    fill = np.round(np.array(net.cfg.mean) * 255).astype(np.uint8)
    history = load_history(run_dir)
    with staged_dir(out) as stage:
        export_embedder(net, stage / FP32_FILE, spec.height, white)
        quantize_int8(stage / FP32_FILE, stage / INT8_FILE, calib_faces.pixels)
        shutil.copyfile(run_dir / LANDMARKS, stage / LANDMARKS)
        fp32 = OnnxModel(stage / FP32_FILE, pre, [], "fp32")
        int8 = OnnxModel(stage / INT8_FILE, pre, [], "int8")
        metric_values: dict[str, float | int] = {"best_epoch": int(state["best_epoch"]),
                                                 "val_verification": float(state["best_val_acc"])}
        probe = val if len(val.pixels) else calib_faces
        with torch.no_grad():
            ref = PixelEmbedder(net, white).eval()(torch.from_numpy(probe.pixels[:64])).numpy()
        metric_values["max_abs_onnx_torch"] = float(np.abs(fp32.run(probe.pixels[:64])["embedding"] - ref).max())
        if not np.isfinite(metric_values["max_abs_onnx_torch"]):
            raise BundleError(f"{run_dir}: the network outputs NaN or infinity; training diverged — train again with "
                              "a lower --lr")
        curves: dict[str, dict] = {}
        impostors = np.zeros((0, net.cfg.embedding_dim), np.float16)
        impostor_names: list[str] = []
        if len(val.pixels) and len(np.unique(val.labels)) >= 2:
            views = region_views(val.pixels, regions, fill)
            for view, px in views.items():
                e = fp32.run(px)["embedding"]
                genuine, impostor = calibration.template_scores(e, val.labels, cfg.seed)
                curves[view] = calibration.fit(genuine, impostor).to_json()
                if view == "face":
                    order = np.random.default_rng(cfg.seed).permutation(len(e))[:MAX_IMPOSTORS]
                    impostors = e[np.sort(order)].astype(np.float16)
                    impostor_names = [data.classes[int(c)] for c in val.labels[np.sort(order)]]
                    for tag, model in (("fp32", fp32), ("int8", int8)):
                        ev = model.run(val.pixels)["embedding"]
                        g, i = calibration.template_scores(ev, val.labels, cfg.seed)
                        s, y = np.concatenate([g, i]), np.concatenate([np.ones(len(g), bool), np.zeros(len(i), bool)])
                        metric_values[f"val_template_auc_{tag}"] = metrics.auc(s, y)
        if len(test.pixels):
            for tag, model in (("fp32", fp32), ("int8", int8)):
                scored = _lfw_pairs_scores(model, cfg, data, test)
                if scored is not None:
                    v = metrics.verify_folds(*scored)
                    for key, value in (("acc", v.accuracy), ("auc", v.auc), ("tar_at_far1", v.tar_at_far1)):
                        if np.isfinite(value):  # a small run's test people may lack one kind of pair
                            metric_values[f"lfw_verif_{key}_{tag}"] = value
        inputs = [TensorSpec(name=INPUT, dtype="uint8", shape=[-1, spec.height, spec.width, 3])]
        outputs = [TensorSpec(name="embedding", dtype="float32", shape=[-1, net.cfg.embedding_dim])]
        on: Literal["test", "train"] = "test" if len(test.pixels) else "train"
        variants = _variants(net, white, stage, pre, inputs, outputs, (test if on == "test" else calib_faces).pixels,
                             on, calib_faces.pixels, (fp32, int8), request)
        buf = io.BytesIO()
        np.savez(buf, embeddings=impostors, names=np.array(impostor_names, dtype=str))
        atomic.write_bytes(stage / IMPOSTORS_FILE, buf.getvalue())
        source = "lfw" if data.source == "lfw" else f"folder:{Path(data.root).name}"
        pre = pre.model_copy(update={"crop": no_detect_crop(data)})
        try:
            manifest = Manifest(
                name=name, task="face-embedding",
                inputs=inputs, outputs=outputs, preprocessing=pre, labels=[], models={"fp32": FP32_FILE, "int8": INT8_FILE}, metrics=metric_values,
                fingerprint=Fingerprint(data=data.fingerprint, config=_sha256_json(cfg.identity())),
                training={"data": source, "objective": "embed", "backbone": cfg.backbone, "teacher": cfg.teacher, "epochs": len(history),
                          "exported_epoch": state["epoch"], "seed": cfg.seed, "subset": cfg.subset,
                          "min_faces": cfg.min_faces, "train_people": len({data.labels[i] for i in data.split["train"]}),
                          "train_images": len(data.split["train"]), "network": net.cfg.to_dict(),
                          "whitened_on": f"{len(white_faces.pixels)} training photos" if white and white_faces else "not whitened",
                          **provenance.manifest_entry(run_dir)},
                apps={APP: {"landmarks": LANDMARKS, "align": spec.to_json(), "regions": {k: list(v) for k, v in regions.items()},
                            "calibration": curves, "impostors": IMPOSTORS_FILE, "far": FAR,
                            "fill": [int(v) for v in fill]}},
                variants=variants,
            )
        except ValidationError as e:
            raise BundleError(f"cannot write the manifest: {e}") from e
        write_manifest(stage, manifest)
        Bundle.load(stage)
    return Bundle.load(out)


def _variants(net: FaceNet, white: tuple[np.ndarray, np.ndarray] | None, stage: Path, pre: PreprocessSpec,
              inputs: list[TensorSpec], outputs: list[TensorSpec], faces: np.ndarray, on: Literal["test", "train"],
              calibration_pixels: np.ndarray, onnx: tuple[OnnxModel, OnnxModel],
              request: VariantRequest) -> dict[str, Variant]:
    """The ``request``ed variants of the embedder, written into ``stage``, with the ONNX models' entries; each
    checked on up to PARITY_PHOTOS of ``faces`` (aligned, of the run's part ``on``): fp32 by the largest difference
    from PyTorch over the embedding's values, the bar ONNX's fp32 meets. {} when none was asked for."""
    if not request.keys or request.tools is None:
        return {}
    pixels = faces[:PARITY_PHOTOS]
    model = PixelEmbedder(net, white).eval()
    with torch.no_grad():
        ref = [model(torch.from_numpy(pixels)).numpy()]
    photos = ParityPhotos(pixels, on, ref, 0.0)
    variants = onnx_variants(inputs, outputs, {"fp32": FP32_FILE, "int8": INT8_FILE},
                             {"fp32": onnx[0].run(pixels), "int8": onnx[1].run(pixels)}, photos)
    return variants | other_variants(model, stage, request.keys, request.tools, pre, [], outputs, calibration_pixels,
                                     photos, asked=request.asked)


def _sha256_json(obj: object) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
