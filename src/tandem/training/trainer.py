"""The local trainer: AdamW, warm-up then cosine decay, label smoothing, checkpoint every epoch.

Every random draw of an epoch (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
run stopped after epoch k and resumed gives the same weights as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tandem.data import load_catalog
from tandem.data.pixels import load_pixels
from tandem.data.split import stratified_split, stratified_subset
from tandem.errors import CheckpointError, ConfigError, DataError
from tandem.models.mobilenet import EmbeddingNet, NetConfig
from tandem.preprocess import CropSpec, NormalizeSpec, PreprocessSpec
from tandem.training import checkpoint, plots
from tandem.training.augment import AugmentConfig, augment
from tandem.training.progress import TrainProgress
from tandem.training.run import (
    CONFIG,
    CONFUSION,
    CURVES,
    DATASET,
    HISTORY,
    RunData,
    TrainConfig,
    load_run,
    write_json,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    best_epoch: int
    best_val_acc: float
    seconds: float
    train_images: int
    classes: int


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
        return torch.device("cuda")
    raise ConfigError(f"unknown --device {name!r}: use cpu or cuda")


def preprocess_spec(cfg: TrainConfig, data: RunData, net_cfg: NetConfig) -> PreprocessSpec:
    return PreprocessSpec(
        crop=CropSpec.model_validate(data.crop), height=cfg.height, width=cfg.width,
        normalize_in_graph=NormalizeSpec(mean=net_cfg.mean, std=net_cfg.std),
    )


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [0, 1]."""
    return pixels.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def infer(model: EmbeddingNet, pixels: np.ndarray, device: torch.device, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, raw embeddings) for uint8 pixels, in eval mode."""
    model.eval()
    logits, embs = [], []
    for i in range(0, len(pixels), batch):
        x = to_float(torch.from_numpy(pixels[i : i + batch])).to(device)
        lo, em = model(x)
        logits.append(lo.cpu().numpy())
        embs.append(em.cpu().numpy())
    if not logits:
        return np.zeros((0, model.cfg.num_classes), np.float32), np.zeros((0, model.cfg.embedding_dim), np.float32)
    return np.concatenate(logits), np.concatenate(embs)


def _batches(perm: torch.Tensor, size: int) -> list[torch.Tensor]:
    chunks = list(perm.split(size))
    # BatchNorm cannot train on a batch of one.
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def prepare_run(cfg: TrainConfig) -> RunData:
    catalog = load_catalog(cfg.data, cfg.min_faces)
    labels = [r.label for r in catalog.records]
    keep = stratified_subset(labels, cfg.subset, cfg.seed)
    catalog = catalog.subset(keep)
    split = stratified_split([r.label for r in catalog.records], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    return RunData.from_catalog(catalog, split)


def _check_trainable(classes: list[str], labels: np.ndarray, root: str) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{root}: no readable training image for class(es) {', '.join(empty[:10])}; "
            "add images or remove those folders"
        )


def train(cfg: TrainConfig, resume: bool = False, show_progress: bool = True) -> TrainResult:
    t_start = time.perf_counter()
    out = cfg.out
    cfg.validate()
    device = resolve_device(cfg.device)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    state = None
    if resume:
        state = checkpoint.load(out / checkpoint.LAST)
        old_cfg, data = load_run(out)
        if old_cfg.identity() != cfg.identity():
            changed = sorted(k for k, v in cfg.identity().items() if old_cfg.identity().get(k) != v)
            raise CheckpointError(
                f"{out}: --resume with different settings ({', '.join(changed)}); "
                "resume with the same settings (only --epochs may grow) or train into a new --out"
            )
        if cfg.epochs < state.get("epoch", 0):
            raise CheckpointError(
                f"{out} has already trained {state['epoch']} epochs; --epochs {cfg.epochs} would go backwards. "
                "Export it as it is, or pass a larger --epochs"
            )
    else:
        if (out / checkpoint.LAST).exists():
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
        data = prepare_run(cfg)
        out.mkdir(parents=True, exist_ok=True)

    train_cat, val_cat = data.part("train"), data.part("val")
    train_x, train_y, _ = load_pixels(train_cat, _load_spec(cfg, data))
    _check_trainable(data.classes, train_y, data.root)

    val_x, val_y, _ = load_pixels(val_cat, _load_spec(cfg, data)) if len(val_cat.records) else (
        np.zeros((0, cfg.height, cfg.width, 3), np.uint8), np.zeros(0, np.int64), [])
    for part, cat in (("train", train_cat), ("val", val_cat)):
        data.notes = sorted(set(data.notes) | {f"{part}: {n}" for n in cat.notes})

    if state is None:
        mean = tuple(float(v) for v in (train_x.reshape(-1, 3).mean(0) / 255.0))
        std = tuple(float(v) for v in (train_x.reshape(-1, 3).std(0) / 255.0 + 1e-3))
        net_cfg = NetConfig(
            num_classes=len(data.classes), embedding_dim=cfg.embedding_dim, width=cfg.width_mult,
            stem_stride=cfg.stem_stride, mean=mean, std=std,
        )
    else:
        net_cfg = NetConfig.from_dict(state["net"])
    write_json(out / CONFIG, cfg.to_json())  # on resume, records the grown --epochs
    write_json(out / DATASET, data.__dict__)

    torch.manual_seed(cfg.seed)
    model = EmbeddingNet(net_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    best_val, best_epoch, start = -1.0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, best_val, best_epoch, start = state["history"], state["best_val_acc"], state["best_epoch"], state["epoch"]
        if start >= cfg.epochs:
            log.info("%s: already trained for %d epochs", out, start)

    aug_cfg = AugmentConfig()
    train_t = torch.from_numpy(train_x)
    train_lbl = torch.from_numpy(train_y)
    steps_per_epoch = len(_batches(torch.arange(len(train_x)), cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    last = cfg.epochs if cfg.stop_after is None else max(start, cfg.stop_after)
    with TrainProgress(cfg.epochs, steps_per_epoch, start, enabled=show_progress and start < last) as bar:
        for epoch in range(start, last):
            t0 = time.perf_counter()
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            model.train()
            seen, loss_sum, correct = 0, 0.0, 0
            for b, idx in enumerate(_batches(torch.randperm(len(train_x), generator=g), cfg.batch_size)):
                step = epoch * steps_per_epoch + b
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total_steps, warmup, cfg.lr)
                x = to_float(train_t[idx])
                if cfg.augment:
                    x = augment(x, aug_cfg, g)
                x, y = x.to(device), train_lbl[idx].to(device)
                logits, _ = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = len(idx)
                seen += n
                loss_sum += float(loss.detach()) * n
                correct += int((logits.argmax(1) == y).sum())
                bar.step(epoch, loss_sum / seen, correct / seen)

            val_loss, val_acc = evaluate(model, val_x, val_y, device)
            row = {
                "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0, "device": device.type,
            }
            history.append(row)
            score = val_acc if not math.isnan(val_acc) else row["train_acc"]
            improved = score >= best_val
            if improved:
                best_val, best_epoch = score, epoch + 1
            ckpt = {
                "epoch": epoch + 1, "net": net_cfg.to_dict(), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "history": history, "best_val_acc": best_val,
                "best_epoch": best_epoch, "classes": data.classes,
            }
            # best.pt first: a crash between the two saves must not leave checkpoint.pt pointing
            # at a best epoch that best.pt does not hold.
            if improved:
                checkpoint.save(out / checkpoint.BEST, ckpt)
            checkpoint.save(out / checkpoint.LAST, ckpt)
            write_json(out / HISTORY, history)
            plots.plot_curves(history, out / CURVES)
            bar.epoch_done(epoch, row)

    best = checkpoint.load(out / checkpoint.BEST if (out / checkpoint.BEST).exists() else out / checkpoint.LAST)
    model.load_state_dict(best["model"])
    cx, cy = (val_x, val_y) if len(val_y) else (train_x, train_y)
    logits, _ = infer(model, cx, device)
    cm = plots.confusion_matrix(cy, logits.argmax(1), len(data.classes))
    which = "validation" if len(val_y) else "training"
    plots.plot_confusion(cm, data.classes, out / CONFUSION, f"Confusion on the {which} set (epoch {best_epoch})")
    return TrainResult(
        out, len(history), best_epoch, best_val, time.perf_counter() - t_start, len(train_x), len(data.classes)
    )


def _load_spec(cfg: TrainConfig, data: RunData) -> PreprocessSpec:
    # Normalisation does not matter for loading pixels; the crop and size do.
    return preprocess_spec(cfg, data, NetConfig(num_classes=len(data.classes)))


@torch.no_grad()
def evaluate(model: EmbeddingNet, x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[float, float]:
    if len(y) == 0:
        return float("nan"), float("nan")
    logits, _ = infer(model, x, device)
    lt = torch.from_numpy(logits)
    loss = float(F.cross_entropy(lt, torch.from_numpy(y)))
    return loss, float((lt.argmax(1).numpy() == y).mean())
