"""`tandem train --task stylize --teacher-effect EFFECT`: a small network learns to imitate a slow
photo effect (the HDRnet idea, Gharbi et al. 2017: learn the operator, run it in real time).

The run folder:

  config.json         the StylizeConfig (task "stylize")
  dataset.json        the photos (relative to the data root): training and held-out, a fingerprint
  teacher.npz         the photos at --photo-size and the teacher's pictures of them, computed once
  checkpoint.pt       the latest epoch (for --resume);  best.pt  the best held-out PSNR
  history.json        per epoch: train loss, held-out PSNR and SSIM against the teacher, seconds
  contact_sheet.png   held-out photos: input / teacher / student, rewritten after each epoch

Training takes random --crop squares (and mirror images) of the photos and their teacher's pictures;
the loss is L1 on the pixels plus L1 on their horizontal and vertical differences (the edges an
effect draws). The held-out photos are judged whole, at --photo-size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tandem import atomic
from tandem.bundle import NAME_RE
from tandem.data.photos import PhotoSet, find_photos, load_squares
from tandem.effects import EFFECTS, effect, psnr, ssim
from tandem.errors import CheckpointError, ConfigError, DataError
from tandem.models.stylize import PixelStylizer, StylizeNet, StylizeNetConfig
from tandem.training import checkpoint, provenance
from tandem.training.run import CONFIG, DATASET, HISTORY, RunConfig, read_json, write_json
from tandem.training.sheet import contact_sheet

log = logging.getLogger(__name__)

TASK = "stylize"
TEACHER = "teacher.npz"
SHEET = "contact_sheet.png"
SHEET_PHOTOS = 4
# Without --max-images a run takes at most this many photos: the photos and their teacher's pictures
# stay in memory (2 × 196 KB a photo at 256×256), and LFW's 13,233 would take 5 GB.
DEFAULT_MAX_IMAGES = 1000


@dataclass
class StylizeConfig(RunConfig):
    data: str
    out: Path
    effect: str
    name: str = "deepart"
    subset: float = 1.0
    max_images: int | None = None
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    photo_size: int = 256
    crop: int = 128
    val_fraction: float = 0.1
    grad_weight: float = 0.5
    seed: int = 0
    device: str = "cpu"
    task: str = TASK

    def validate(self) -> None:
        """Refuse settings that would fail deep inside the run, with what to use instead."""
        problems = []
        if self.effect not in EFFECTS:
            problems.append(f"unknown --teacher-effect {self.effect!r}: use {', '.join(EFFECTS)}")
        if not NAME_RE.match(self.name):
            problems.append(f"--name {self.name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 < self.subset <= 1:
            problems.append(f"--subset is the fraction of the photos to use: above 0 and at most 1, got {self.subset}")
        if self.max_images is not None and self.max_images < 2:
            problems.append(f"--max-images must be at least 2 (one to train on, one held out), got {self.max_images}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if not 32 <= self.photo_size <= 1024:
            problems.append(f"--photo-size must be from 32 to 1024, got {self.photo_size}")
        if not 16 <= self.crop <= self.photo_size:
            problems.append(f"--crop must be from 16 to --photo-size ({self.photo_size}), got {self.crop}")
        if not 0 < self.val_fraction <= 0.5:
            problems.append(f"--val-fraction must be above 0 and at most 0.5, got {self.val_fraction}")
        if self.device not in ("cpu", "cuda"):
            problems.append(f"unknown --device {self.device!r}: use cpu or cuda")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class StylizeData:
    """The photos as this run saw them."""

    root: str
    source: str
    train: list[str]
    held_out: list[str]
    fingerprint: str

    def photo_set(self) -> PhotoSet:
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(f"the run's photos at {root} are gone; put them back there to use this run")
        return PhotoSet(root, self.source, sorted(self.train + self.held_out))


@dataclass(frozen=True)
class Pictures:
    """Photos at the run's photo size and the teacher's pictures of them."""

    photos: np.ndarray
    teacher: np.ndarray


@dataclass
class StylizeResult:
    run_dir: Path
    epochs: int
    best_epoch: int
    best_psnr: float
    best_ssim: float
    seconds: float
    train_images: int
    held_out_images: int


def is_stylize_run(run_dir: Path) -> bool:
    """Whether ``run_dir``'s config.json is an image-to-image run's (export and resume go their own way)."""
    path = run_dir / CONFIG
    return path.is_file() and read_json(path).get("task") == TASK


def load_stylize_run(run_dir: Path) -> tuple[StylizeConfig, StylizeData]:
    try:
        return StylizeConfig.from_json(read_json(run_dir / CONFIG)), StylizeData(**read_json(run_dir / DATASET))
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"{run_dir}: {CONFIG} or {DATASET} does not match this Tandem version ({e}); "
                              "train the run again") from e


def choose_photos(cfg: StylizeConfig, data_home: Path | None = None) -> StylizeData:
    """The run's photos: --subset of them (at most --max-images), a --val-fraction held out, by --seed.
    ``data_home``: where LFW is (TANDEM_DATA_HOME), for ``--data lfw``."""
    found = find_photos(cfg.data, data_home)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(found.files))
    n = min(max(1, round(len(order) * cfg.subset)), cfg.max_images or DEFAULT_MAX_IMAGES)
    if n < 2:
        raise DataError(f"{found.root}: {n} photo(s) chosen of {len(found.files)}; a run needs at least 2 (one to "
                        "train on, one held out): add photos or raise --subset")
    chosen = [found.files[i] for i in order[:n]]
    held = max(1, round(n * cfg.val_fraction))
    picked = PhotoSet(found.root, found.source, sorted(chosen))
    return StylizeData(str(found.root.resolve()), found.source, sorted(chosen[held:]), sorted(chosen[:held]),
                       picked.fingerprint())


def teacher_pictures(cfg: StylizeConfig, data: StylizeData, show_progress: bool = False,
                     fresh: bool = False) -> tuple[Pictures, Pictures]:
    """(training, held-out) photos and their teacher's pictures: read from the run's teacher.npz when it
    holds this run's, else computed once and written there. ``fresh`` (a new run, before its
    dataset.json is written): unreadable photos are left out of ``data``, each logged; otherwise the
    run's photos must all still read as they did."""
    path = cfg.out / TEACHER
    if path.is_file() and not fresh:
        with np.load(path) as z:
            if str(z["key"]) == _teacher_key(cfg, data):
                n = int(z["train"])
                return (Pictures(z["photos"][:n], z["teacher"][:n]), Pictures(z["photos"][n:], z["teacher"][n:]))
        log.info("%s belongs to other settings; computing the teacher's pictures again", path)
    root = data.photo_set().root
    teach = effect(cfg.effect)
    parts = []
    for files, what in ((data.train, "training"), (data.held_out, "held-out")):
        photos, kept = load_squares(root, files, cfg.photo_size)
        if len(kept) < len(files) and not fresh:
            raise DataError(f"{root}: {len(files) - len(kept)} of the run's {what} photos cannot be read any more (see "
                            "the warnings above); put them back as they were, or train into a new --out")
        if not kept:
            raise DataError(f"{root}: none of the {len(files)} {what} photos can be read (see the warnings above); "
                            "pass --data DIR holding JPEG or PNG photos")
        files[:] = kept
        with _bar(show_progress, f"teacher {cfg.effect}, {what} photos", len(photos)) as bar:
            pictures = []
            for p in photos:
                pictures.append(teach(p))
                bar.advance(0)
        parts.append(Pictures(photos, np.stack(pictures)))
    train, held = parts
    with atomic.temp_path_for(path) as tmp, tmp.open("wb") as f:
        np.savez(f, key=np.array(_teacher_key(cfg, data)), train=np.array(len(train.photos)),
                 photos=np.concatenate([train.photos, held.photos]), teacher=np.concatenate([train.teacher, held.teacher]))
    return train, held


def _teacher_key(cfg: StylizeConfig, data: StylizeData) -> str:
    what = {"effect": EFFECTS[cfg.effect].teacher, "size": cfg.photo_size, "train": data.train,
            "held_out": data.held_out, "fingerprint": data.fingerprint}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


class _bar:
    """A rich progress bar with one task, or nothing when progress is off."""

    def __init__(self, enabled: bool, what: str, total: int, start: int = 0) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), disable=not enabled)
        self.task = self.progress.add_task(what, total=total, completed=start, note="")
        self.enabled = enabled

    def __enter__(self) -> _bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def advance(self, loss: float, **fields: Any) -> None:
        self.progress.update(self.task, advance=1, note=f"loss {loss:.4f}" if loss else "", **fields)

    def print(self, line: str) -> None:
        if self.enabled:
            self.progress.console.print(line)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    return torch.device(name)


def loss_fn(pred: torch.Tensor, target: torch.Tensor, grad_weight: float) -> torch.Tensor:
    """L1 on pixels (0..1) plus ``grad_weight`` × L1 on their horizontal and vertical differences."""
    p, t = pred / 255.0, target / 255.0
    loss = F.l1_loss(p, t)
    if grad_weight:
        loss = loss + grad_weight * (F.l1_loss(p[:, 1:] - p[:, :-1], t[:, 1:] - t[:, :-1])
                                     + F.l1_loss(p[:, :, 1:] - p[:, :, :-1], t[:, :, 1:] - t[:, :, :-1]))
    return loss


def _batch(train: Pictures, idx: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random ``crop`` squares of the photos ``idx`` and the same squares of their teacher's pictures,
    half of them mirrored."""
    size = train.photos.shape[1]
    xs, ys = [], []
    for i in idx:
        y0, x0 = rng.integers(0, size - crop + 1, 2)
        x, y = train.photos[i, y0 : y0 + crop, x0 : x0 + crop], train.teacher[i, y0 : y0 + crop, x0 : x0 + crop]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x)
        ys.append(y)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))


@torch.no_grad()
def stylize(model: PixelStylizer, photos: np.ndarray, device: torch.device, batch: int = 8) -> np.ndarray:
    """The student's pictures of ``photos``, rounded to uint8."""
    model.eval()
    out = [model(torch.from_numpy(photos[i : i + batch]).to(device)).cpu().numpy() for i in range(0, len(photos), batch)]
    return np.rint(np.concatenate(out)).astype(np.uint8)


def train_stylize(cfg: StylizeConfig, resume: bool = False, show_progress: bool = True,
                  data_home: Path | None = None) -> StylizeResult:
    t_start = time.perf_counter()
    cfg.validate()
    device = _device(cfg.device)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    out = cfg.out
    state: dict[str, Any] | None = None
    if resume:
        state = checkpoint.load(out / checkpoint.LAST)
        old, data = load_stylize_run(out)
        if old.identity() != cfg.identity():
            changed = sorted(k for k, v in cfg.identity().items() if old.identity().get(k) != v)
            raise CheckpointError(f"{out}: --resume with different settings ({', '.join(changed)}); resume with the "
                                  "same settings (only --epochs may grow) or train into a new --out")
        if cfg.epochs < state["epoch"]:
            raise CheckpointError(f"{out} has already trained {state['epoch']} epochs; --epochs {cfg.epochs} would go "
                                  "backwards. Export it as it is, or pass a larger --epochs")
    else:
        if (out / checkpoint.LAST).exists():
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
        data = choose_photos(cfg, data_home)  # refuses a folder without photos before the run folder exists
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        train, held = teacher_pictures(cfg, data, show_progress, fresh=not resume)
    except BaseException:
        if created:  # a new run that could not start leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    write_json(out / CONFIG, cfg.to_json())
    write_json(out / DATASET, asdict(data))
    provenance.record(out)  # the code's git commit, for the bundle's lineage

    torch.manual_seed(cfg.seed)
    net_cfg = StylizeNetConfig() if state is None else StylizeNetConfig.from_dict(state["net"])
    model = PixelStylizer(StylizeNet(net_cfg)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = max(1, math.ceil(len(train.photos) / cfg.batch_size))
    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "psnr": -1.0, "ssim": 0.0}
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, best, start = state["history"], state["best"], state["epoch"]
        if start < cfg.epochs:
            log.info("%s: resuming after epoch %d of %d", out, start, cfg.epochs)
    # One cycle over all --epochs; a resumed run's is moved on to where it stopped (--epochs may have grown).
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    with warnings.catch_warnings():  # stepping the schedule alone is the point here, not a mistake
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(min(start * steps, cfg.epochs * steps - 1)):
            sched.step()
    sheet_idx = np.arange(min(SHEET_PHOTOS, len(held.photos)))
    with _bar(show_progress and start < cfg.epochs, "train", cfg.epochs * steps, start * steps) as bar:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            rng = np.random.default_rng([cfg.seed, epoch])  # the same epoch whether resumed or not
            order = rng.permutation(len(train.photos))
            model.train()
            total = 0.0
            for s in range(steps):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                x, y = _batch(train, idx, cfg.crop, rng)
                loss = loss_fn(model.unclamped(torch.from_numpy(x).to(device)), torch.from_numpy(y).to(device).float(),
                               cfg.grad_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                value = loss.item()
                total += value
                bar.advance(value)
            student = stylize(model, held.photos, device)
            row = {"epoch": epoch + 1, "train_loss": total / steps, "val_psnr": psnr(student, held.teacher),
                   "val_ssim": ssim(student, held.teacher), "seconds": time.perf_counter() - t0}
            history.append(row)
            improved = row["val_psnr"] > best["psnr"]
            if improved:
                best = {"epoch": epoch + 1, "psnr": row["val_psnr"], "ssim": row["val_ssim"]}
            ckpt = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "net": net_cfg.to_dict(), "history": history, "best": best}
            if improved:  # best.pt first, as the classifier's trainer does
                checkpoint.save(out / checkpoint.BEST, ckpt)
            checkpoint.save(out / checkpoint.LAST, ckpt)
            write_json(out / HISTORY, history)
            contact_sheet({"photo": held.photos[sheet_idx], f"teacher ({cfg.effect})": held.teacher[sheet_idx],
                           "student": student[sheet_idx]}, out / SHEET, f"epoch {epoch + 1}/{cfg.epochs}")
            bar.print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}  held-out PSNR "
                      f"{row['val_psnr']:.2f} dB  SSIM {row['val_ssim']:.3f}  ({row['seconds']:.1f}s)")
    return StylizeResult(out, len(history), int(best["epoch"]), float(best["psnr"]), float(best["ssim"]),
                         time.perf_counter() - t_start, len(train.photos), len(held.photos))
