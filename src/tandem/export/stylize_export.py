"""A stylize run (`tandem train --task stylize`) → an image-to-image bundle (docs/bundle.md).

fp32 ONNX with a dynamic batch, height and width: uint8 NHWC pixels in, ``image`` out (float32 NHWC,
0..255, to be rounded by whoever shows it) and ``image_uint8``, the same picture rounded in the graph:
what an OIP client asks for to get uint8 pixels back (a quarter of the bytes). The int8 variant (static QDQ, calibrated on training
photos) ships only when it keeps its quality: at most INT8_MAX_LOSS_DB below fp32's PSNR against the
teacher (or the pairs' targets) on the held-out photos — for a neural style, which has no target, at
least INT8_PICTURE_DB against fp32's own pictures (the bar of every int8 phone file of deep art); the manifest says why when it does not.
``apps.deepart`` names the effect, what it learned from, and how close it comes (PSNR and SSIM against
the targets, or a neural style's style and content losses), measured here; a neural style's bundle
also holds its style picture (``style.png``, for a picker to show).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import ValidationError

from tandem.atomic import staged_dir
from tandem.bundle import Bundle, Fingerprint, Manifest, Precision, Task, TensorSpec, Variant, write_manifest
from tandem.bundle.preprocess import CropSpec, NormalizeSpec, PreprocessSpec
from tandem.bundle.runtime import OnnxModel
from tandem.effects import EFFECTS, psnr, ssim
from tandem.errors import BundleError, CheckpointError
from tandem.export.formats import Tools
from tandem.export.onnx_export import INPUT, write_onnx
from tandem.export.quantize import quantize_int8
from tandem.export.variant_parity import IMAGE_BARS_FLOAT, IMAGE_BARS_UINT8, INT8_PICTURE_DB, ParityPhotos
from tandem.export.variants import onnx_variants, other_variants
from tandem.models.stylize import PixelStylizer, StylizeNet, StylizeNetConfig
from tandem.training import checkpoint, provenance
from tandem.training.run import load_history
from tandem.training.stylize import (
    PAIRS,
    STYLE,
    Pictures,
    load_stylize_run,
    style_loss_for,
    style_picture,
    style_scores,
    teacher_pictures,
)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OUTPUT = "image"
OUTPUT_UINT8 = "image_uint8"
APP = "deepart"
TASK: Task = "image-to-image"
INT8_MAX_LOSS_DB = 1.0
STYLE_THUMB = 256  # the longest side of the style picture a bundle carries
CALIBRATION_PHOTOS = 64
# The parity check also runs a photo of an odd size, so the dynamic height and width are exercised.
ODD_SIZE = (37, 53)


def load_stylizer(run_dir: Path) -> tuple[PixelStylizer, dict]:
    path = run_dir / checkpoint.BEST
    path = path if path.exists() else run_dir / checkpoint.LAST
    state = checkpoint.load(path)
    try:
        model = PixelStylizer(StylizeNet(StylizeNetConfig.from_dict(state["net"])))
        model.load_state_dict(state["model"])
        state["epoch"], state["best"]  # a missing key fails here, not later
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the checkpoint does not fit this Tandem's network ({e}); train again") from e
    return model.eval(), state


@torch.no_grad()
def _torch_pixels(model: PixelStylizer, photos: np.ndarray) -> np.ndarray:
    return np.concatenate([model(torch.from_numpy(photos[i : i + 8])).numpy() for i in range(0, len(photos), 8)])


class _WithPixels(torch.nn.Module):
    """The exported graph: the stylizer's float picture and the same rounded to uint8 pixels."""

    def __init__(self, model: PixelStylizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.model(pixels)  # clamped to 0..255 already
        return image, torch.round(image).to(torch.uint8)


def _rounded(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0, 255)).astype(np.uint8)


def export_stylize_run(run_dir: Path, out: Path, name: str | None = None, keys: frozenset[str] = frozenset(),
                       tools: Tools | None = None, asked: bool = False) -> Bundle:
    """``keys``: the phone variants to write besides ONNX (``litert-fp32``, ``litert-int8``, ``executorch-fp32`` …: formats.py's
    IMAGE_TO_IMAGE), at the size the model was trained at; ``asked``: the user named them (--formats), so one that
    fails its check stops the export instead of being left out with a warning."""
    cfg, data = load_stylize_run(run_dir)
    cfg.out = run_dir  # wherever the run folder is now
    model, state = load_stylizer(run_dir)
    train, held = teacher_pictures(cfg, data)
    net_cfg = model.net.cfg
    spec = PreprocessSpec(crop=CropSpec(mode="none"), height=cfg.photo_size, width=cfg.photo_size,
                          normalize_in_graph=NormalizeSpec(mean=net_cfg.mean, std=net_cfg.std))
    with staged_dir(out) as stage:
        write_onnx(_WithPixels(model).eval(), torch.zeros(2, 64, 64, 3, dtype=torch.uint8), stage / FP32_FILE, INPUT,
                   [OUTPUT, OUTPUT_UINT8], spatial=True)
        fp32 = OnnxModel(stage / FP32_FILE, spec, [], "fp32")
        odd = held.photos[:1, : ODD_SIZE[0], : ODD_SIZE[1]]
        max_abs = 0.0
        for photos in (held.photos, odd):
            answers = [fp32.infer({INPUT: photos[i : i + 8]}) for i in range(0, len(photos), 8)]
            got = np.concatenate([a[OUTPUT] for a in answers])
            max_abs = max(max_abs, float(np.abs(got - _torch_pixels(model, photos)).max()))
            pixels = np.concatenate([a[OUTPUT_UINT8] for a in answers])
            # Round-half-to-even in the graph against numpy's rint: the same rule, so exactly equal.
            if pixels.dtype != np.uint8 or not np.array_equal(pixels, _rounded(got)):
                raise BundleError(f"{run_dir}: the graph's {OUTPUT_UINT8} is not its {OUTPUT} rounded "
                                  f"({pixels.dtype}); this is a bug in the export, please report it")
            if photos is held.photos:
                out32 = got
        if not np.isfinite(max_abs) or not np.isfinite(out32).all():
            raise BundleError(f"{run_dir}: the model outputs NaN or infinity; training diverged — train again with a "
                              "lower --lr")
        metrics: dict[str, float | int] = {
            "max_abs_onnx_torch": max_abs, "held_out_images": len(held.photos), "best_epoch": int(state["best"]["epoch"]),
        }
        app: dict[str, object] = {"effect": cfg.effect}
        if held.teacher is not None:
            metrics.update(psnr_db_fp32=psnr(_rounded(out32), held.teacher), ssim_fp32=ssim(_rounded(out32), held.teacher),
                           # What leaving the photo as it is would score: a gentle effect is "close" for free.
                           psnr_db_identity=psnr(held.photos, held.teacher), ssim_identity=ssim(held.photos, held.teacher))
            if cfg.effect == PAIRS:
                app.update(teacher=None, summary=f"learned from before/after pairs ({data.source})")
            else:
                app.update(teacher=EFFECTS[cfg.effect].teacher, summary=EFFECTS[cfg.effect].summary)
            app.update(psnr_db=round(float(metrics["psnr_db_fp32"]), 2), ssim=round(float(metrics["ssim_fp32"]), 4))
        else:
            style = style_picture(cfg)
            scores = style_scores(style_loss_for(cfg, style), _rounded(out32), held.photos)
            metrics.update(style_loss_fp32=scores["style"], content_loss_fp32=scores["content"])
            title = Path(cfg.style_image or STYLE).stem
            thumb = Image.fromarray(style)
            thumb.thumbnail((STYLE_THUMB, STYLE_THUMB), Image.Resampling.BILINEAR)
            thumb.save(stage / STYLE, format="PNG")
            app.update(teacher=None, summary=f"a neural style: the textures and colours of {title}", style=title,
                       style_picture=STYLE, style_loss=round(scores["style"], 4), content_loss=round(scores["content"], 4),
                       weights={"style": cfg.style_weight, "content": cfg.content_weight, "tv": cfg.tv_weight})
        models: dict[Precision, str] = {"fp32": FP32_FILE}
        int8_note = _int8(stage, train, held, spec, metrics, _rounded(out32))
        if int8_note is None:
            models["int8"] = INT8_FILE
        app.update(measured_on=f"{len(held.photos)} held-out photos at {cfg.photo_size}x{cfg.photo_size}",
                   output=OUTPUT, int8=int8_note or "kept")
        any_size = [-1, -1, -1, 3]
        variants = (_variants(model, stage, keys, tools or Tools.find(), spec, held.photos, train.photos[:CALIBRATION_PHOTOS],
                              models, asked) if keys else {})
        try:
            manifest = Manifest(
                name=name or cfg.name, task=TASK,
                inputs=[TensorSpec(name=INPUT, dtype="uint8", shape=any_size)],
                outputs=[TensorSpec(name=OUTPUT, dtype="float32", shape=any_size),
                         TensorSpec(name=OUTPUT_UINT8, dtype="uint8", shape=any_size)],
                preprocessing=spec, labels=[], models=models, metrics=metrics,
                fingerprint=Fingerprint(data=data.fingerprint, config=_sha256_json(cfg.identity())),
                training={"task": cfg.task, "effect": cfg.effect, "data": data.source,
                          "epochs": len(load_history(run_dir)), "exported_epoch": state["epoch"], "seed": cfg.seed,
                          "subset": cfg.subset, "train_images": len(train.photos), "photo_size": cfg.photo_size,
                          "crop": cfg.crop, "network": net_cfg.to_dict(), **provenance.manifest_entry(run_dir)},
                apps={APP: app},
                variants=variants,
            )
        except ValidationError as e:
            raise BundleError(f"cannot write the manifest: {e}") from e
        if int8_note is not None:
            (stage / INT8_FILE).unlink(missing_ok=True)
        write_manifest(stage, manifest)
        Bundle.load(stage)  # verify what was written before it replaces anything
    return Bundle.load(out)


def _int8(stage: Path, train: Pictures, held: Pictures, spec: PreprocessSpec, metrics: dict[str, float | int],
          out32: np.ndarray) -> str | None:
    """Quantise, measure; None when the int8 model keeps its quality, else why it is left out."""
    quantize_int8(stage / FP32_FILE, stage / INT8_FILE, train.photos[:CALIBRATION_PHOTOS])
    int8 = OnnxModel(stage / INT8_FILE, spec, [], "int8")
    out8 = _rounded(np.concatenate([int8.infer({INPUT: held.photos[i : i + 8]})[OUTPUT]
                                    for i in range(0, len(held.photos), 8)]))
    metrics["psnr_db_int8_vs_fp32"] = psnr(out8, out32)
    if held.teacher is None:  # a neural style: no target to measure against, so int8 must paint as fp32 does
        if metrics["psnr_db_int8_vs_fp32"] < INT8_PICTURE_DB:
            return (f"left out: int8's pictures came {metrics['psnr_db_int8_vs_fp32']:.1f} dB from fp32's (under "
                    f"{INT8_PICTURE_DB} dB); serve fp32")
        return None
    metrics["psnr_db_int8"], metrics["ssim_int8"] = psnr(out8, held.teacher), ssim(out8, held.teacher)
    loss = float(metrics["psnr_db_fp32"]) - float(metrics["psnr_db_int8"])
    if loss > INT8_MAX_LOSS_DB:
        return (f"left out: int8 came {loss:.2f} dB below fp32 against the teacher (more than {INT8_MAX_LOSS_DB} dB); "
                "serve fp32")
    return None


def _variants(model: PixelStylizer, stage: Path, keys: frozenset[str], tools: Tools, spec: PreprocessSpec,
              photos: np.ndarray, calibration: np.ndarray, models: dict[Precision, str], asked: bool) -> dict[str, Variant]:
    """The bundle's variants (docs/bundle.md, "Variants"): its ONNX models, which take any size, and the phone files
    ``keys``, fixed at the training size (spec's height and width: a phone app resizes its picture to it). Each is
    checked on the held-out ``photos`` against PyTorch: fp32's float picture within IMAGE_BARS_FLOAT (the ONNX
    model's own bar), its uint8 pixels within one level; int8's (calibrated on ``calibration``, training photos)
    8-bit pictures within INT8_PICTURE_DB of PyTorch's."""
    size = [-1, spec.height, spec.width, 3]
    image = _torch_pixels(model, photos)
    reference = [image, _rounded(image)]  # the graph rounds half to even, as numpy's rint does
    check = ParityPhotos(photos, "test", reference, 0.0, bars={OUTPUT: IMAGE_BARS_FLOAT, OUTPUT_UINT8: IMAGE_BARS_UINT8},
                         picture=OUTPUT_UINT8)
    got: dict[str, dict[str, np.ndarray]] = {}
    for precision, file in models.items():
        onnx = OnnxModel(stage / file, spec, [], precision)
        answers = [onnx.infer({INPUT: photos[i : i + 8]}) for i in range(0, len(photos), 8)]
        got[precision] = {n: np.concatenate([a[n] for a in answers]) for n in (OUTPUT, OUTPUT_UINT8)}
    any_size = [-1, -1, -1, 3]
    variants = onnx_variants([TensorSpec(name=INPUT, dtype="uint8", shape=any_size)],
                             [TensorSpec(name=OUTPUT, dtype="float32", shape=any_size),
                              TensorSpec(name=OUTPUT_UINT8, dtype="uint8", shape=any_size)],
                             {str(p): f for p, f in models.items()}, got, check)
    fixed = [TensorSpec(name=OUTPUT, dtype="float32", shape=size), TensorSpec(name=OUTPUT_UINT8, dtype="uint8", shape=size)]
    return variants | other_variants(_WithPixels(model).eval(), stage, keys, tools, spec, [], fixed, calibration, check,
                                     asked=asked)


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
