"""The local trainer: one process runs the epoch loop (loop.py) and writes a checkpoint every epoch.

The run folder's set-up (open_run, load_run_pixels, net_config) and finish are shared with the
Ray Train path (distributed.py), so a run trained either way is the same run folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tandem.bundle.preprocess import CropSpec, NormalizeSpec, PreprocessSpec
from tandem.data import load_catalog
from tandem.data.pixels import load_pixels, report_skipped
from tandem.data.split import stratified_split, stratified_subset
from tandem.errors import CheckpointError, ConfigError, DataError
from tandem.models.mobilenet import EmbeddingNet, NetConfig
from tandem.training import checkpoint, plots, provenance
from tandem.training.loop import EpochLoop, Pixels, StepHook, infer
from tandem.training.progress import ProgressListener, TrainProgress
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


def prepare_run(cfg: TrainConfig, data_home: Path | None = None) -> RunData:
    catalog = load_catalog(cfg.data, cfg.min_faces, data_home)
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


def open_run(cfg: TrainConfig, resume: bool, prepare: Callable[[TrainConfig, Path | None], RunData] | None = None,
             data_home: Path | None = None) -> tuple[RunData, dict | None]:
    """The run folder's data and, for ``cfg``'s --resume, its last checkpoint; refuses a resume with
    other settings, a run that would go backwards, and a fresh run into a used folder. ``prepare``
    makes a new run's data (default: the classifier's stratified split). ``data_home``: where LFW is
    (TANDEM_DATA_HOME), for ``--data lfw``."""
    out = cfg.out
    if not resume:
        if (out / checkpoint.LAST).exists():
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
        data = (prepare or prepare_run)(cfg, data_home)
        out.mkdir(parents=True, exist_ok=True)
        return data, None
    state = checkpoint.load(out / checkpoint.LAST)
    old_cfg, data = load_run(out, data_home)
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
    done = state.get("epoch", 0)
    if done < cfg.epochs:
        log.info("%s: resuming after epoch %d of %d: training continues with epoch %d", out, done, cfg.epochs, done + 1)
    return data, state


def load_run_pixels(cfg: TrainConfig, data: RunData) -> Pixels:
    """The train and validation images, decoded and cropped; their loaders' notes join the run's."""
    train_cat, val_cat = data.part("train"), data.part("val")
    skipped: list[str] = []  # counted once for the dataset, not once per part
    train_x, train_y, _ = load_pixels(train_cat, _load_spec(cfg, data), skipped=skipped)
    val_x, val_y, _ = load_pixels(val_cat, _load_spec(cfg, data), skipped=skipped) if len(val_cat.records) else (
        np.zeros((0, cfg.height, cfg.width, 3), np.uint8), np.zeros(0, np.int64), [])
    note = report_skipped(data.root, skipped, len(train_cat.records) + len(val_cat.records), "training and validation")
    if note:
        data.notes = sorted(set(data.notes) | {note})
    _check_trainable(data.classes, train_y, data.root)
    return Pixels(train_x, train_y, val_x, val_y)


def net_config(cfg: TrainConfig, data: RunData, pixels: Pixels, state: dict | None) -> NetConfig:
    """A new run normalises by its training images' mean and std; a resumed one keeps its own."""
    if state is not None:
        return NetConfig.from_dict(state["net"])
    train_x = pixels.train_x
    m = train_x.reshape(-1, 3).mean(0) / 255.0
    s = train_x.reshape(-1, 3).std(0) / 255.0 + 1e-3
    mean, std = (float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2]))
    return NetConfig(num_classes=len(data.classes), embedding_dim=cfg.embedding_dim, width=cfg.width_mult,
                     stem_stride=cfg.stem_stride, mean=mean, std=std)


def write_run_files(cfg: TrainConfig, data: RunData) -> None:
    write_json(cfg.out / CONFIG, cfg.to_json())  # on resume, records the grown --epochs
    write_json(cfg.out / DATASET, data.to_json())
    provenance.record(cfg.out)  # the code's git commit, for the bundle's lineage


class Epochs(Protocol):
    """What run_epochs drives: the classifier's EpochLoop and the face embedding's EmbedLoop."""

    start: int
    steps_per_epoch: int

    def last_epoch(self) -> int: ...
    def run_epoch(self, epoch: int, on_step: StepHook | None = None) -> tuple[dict[str, Any], bool]: ...
    def checkpoint(self, classes: list[str]) -> dict[str, Any]: ...


def run_epochs(loop: Epochs, cfg: TrainConfig, classes: list[str], show_progress: bool,
               listener: ProgressListener | None = None) -> None:
    """The loop's remaining epochs, each saved (save_epoch) as it ends, under one progress bar (which tells
    ``listener`` too)."""
    last = loop.last_epoch()
    with TrainProgress(cfg.epochs, loop.steps_per_epoch, loop.start, enabled=show_progress and loop.start < last,
                       listener=listener) as bar:
        for epoch in range(loop.start, last):
            row, improved = loop.run_epoch(epoch, bar.step)
            save_epoch(cfg.out, loop.checkpoint(classes), improved)
            bar.epoch_done(epoch, row)


def save_epoch(out: Path, ckpt: dict, improved: bool) -> None:
    """checkpoint.pt (and best.pt when the epoch is the best yet), history.json and curves.png."""
    # best.pt first: a crash between the two saves must not leave checkpoint.pt pointing at a best
    # epoch that best.pt does not hold.
    if improved:
        checkpoint.save(out / checkpoint.BEST, ckpt)
    checkpoint.save(out / checkpoint.LAST, ckpt)
    write_history(out, ckpt["history"], ckpt.get("best_epoch"))


def write_history(out: Path, history: list[dict], best_epoch: int | None = None) -> None:
    """history.json, and curves.png with ``best_epoch`` marked (default: the best validation accuracy)."""
    write_json(out / HISTORY, history)
    plots.plot_curves(history, out / CURVES, best_epoch)


def train(cfg: TrainConfig, resume: bool = False, show_progress: bool = True,
          data_home: Path | None = None, listener: ProgressListener | None = None) -> TrainResult:
    """``data_home``: where LFW is (TANDEM_DATA_HOME), for ``--data lfw``; ``listener``: told the progress
    the bar shows (training/progress.py)."""
    t_start = time.perf_counter()
    cfg.validate()
    device = resolve_device(cfg.device)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    data, state = open_run(cfg, resume, data_home=data_home)
    pixels = load_run_pixels(cfg, data)
    net_cfg = net_config(cfg, data, pixels, state)
    write_run_files(cfg, data)
    loop = EpochLoop(cfg, net_cfg, pixels, device, state)
    if loop.start >= cfg.epochs:
        log.info("%s: already trained for %d epochs", cfg.out, loop.start)
    run_epochs(loop, cfg, data.classes, show_progress, listener)
    return finish(cfg, data, pixels, device, t_start)


def finish(cfg: TrainConfig, data: RunData, pixels: Pixels, device: torch.device, t_start: float) -> TrainResult:
    """The confusion matrix of the best epoch, and the result, both read from the run folder."""
    out = cfg.out
    last = checkpoint.load(out / checkpoint.LAST)
    best = checkpoint.load(out / checkpoint.BEST) if (out / checkpoint.BEST).exists() else last
    model = EmbeddingNet(NetConfig.from_dict(best["net"])).to(device)
    model.load_state_dict(best["model"])
    cx, cy = (pixels.val_x, pixels.val_y) if len(pixels.val_y) else (pixels.train_x, pixels.train_y)
    logits, _ = infer(model, cx, device)
    cm = plots.confusion_matrix(cy, logits.argmax(1), len(data.classes))
    which = "validation" if len(pixels.val_y) else "training"
    plots.plot_confusion(cm, data.classes, out / CONFUSION, f"Confusion on the {which} set (epoch {last['best_epoch']})")
    return TrainResult(out, len(last["history"]), last["best_epoch"], last["best_val_acc"],
                       time.perf_counter() - t_start, len(pixels.train_x), len(data.classes))


def _load_spec(cfg: TrainConfig, data: RunData) -> PreprocessSpec:
    # Normalisation does not matter for loading pixels; the crop and size do.
    return preprocess_spec(cfg, data, NetConfig(num_classes=len(data.classes)))
