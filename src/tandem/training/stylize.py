"""`tandem train --task stylize`: a small network learns a photo effect, from one of three sources:

- ``--teacher-effect EFFECT``: a slow photo effect it learns to imitate (the HDRnet idea, Gharbi et
  al. 2017: learn the operator, run it in real time);
- ``--data DIR`` holding ``input/`` and ``target/``: before/after pairs (an effect someone applied by
  hand, or with a tool we do not have);
- ``--style-image PICTURE``: a neural style (Johnson et al. 2016), trained feed-forward with the
  style and content losses of style_loss.py on photos alone.

The run folder:

  config.json         the StylizeConfig (task "stylize")
  dataset.json        the photos (relative to the data root): training and held-out, a fingerprint
  teacher.npz         the photos at --photo-size and the teacher's (or the pairs') pictures of them
  style.png           a neural style's picture, at the photos' scale
  checkpoint.pt       the latest epoch (for --resume);  best.pt  the best held-out PSNR
  history.json        per epoch: train loss, held-out PSNR and SSIM against the teacher, seconds
  contact_sheet.png   held-out photos: input / teacher / student, rewritten after each epoch

Training takes random --crop squares (and mirror images) of the photos and their teacher's pictures;
the loss is L1 on the pixels plus L1 on their horizontal and vertical differences (the edges an
effect draws). A neural style takes crops of the photos alone. The held-out photos are judged whole, at
--photo-size: PSNR and SSIM against the target pictures, or a neural style's style and content losses.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tandem import atomic
from tandem.bundle import NAME_RE
from tandem.data.photos import PairSet, PhotoSet, find_pairs, find_photos, load_pairs, load_squares, load_style
from tandem.effects import EFFECTS, effect, psnr, ssim
from tandem.errors import CheckpointError, ConfigError, DataError
from tandem.models.stylize import PixelStylizer, StylizeNet, StylizeNetConfig
from tandem.training import checkpoint, provenance
from tandem.training.run import CONFIG, DATASET, HISTORY, RunConfig, read_json, write_json
from tandem.training.sheet import contact_sheet
from tandem.training.style_loss import StyleLoss, StyleWeights

log = logging.getLogger(__name__)

TASK = "stylize"
TEACHER = "teacher.npz"
STYLE = "style.png"
# What --teacher-effect's place holds for the other two sources (every name in EFFECTS is a teacher).
PAIRS = "pairs"
NEURAL_STYLE = "neural-style"
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
    style_image: str | None = None  # a neural style's picture, as given (the run keeps its own copy)
    style_weight: float = 10.0
    content_weight: float = 1.0
    tv_weight: float = 1e-4

    @property
    def neural(self) -> bool:
        return self.effect == NEURAL_STYLE

    def validate(self) -> None:
        """Refuse settings that would fail deep inside the run, with what to use instead."""
        problems = []
        if self.effect not in (*EFFECTS, PAIRS, NEURAL_STYLE):
            problems.append(f"unknown --teacher-effect {self.effect!r}: use {', '.join(EFFECTS)}")
        if self.neural != (self.style_image is not None):
            problems.append("a neural style needs --style-image, and --style-image makes a neural style (no "
                            "--teacher-effect with it)")
        for what in ("style_weight", "content_weight", "tv_weight"):
            if not getattr(self, what) >= 0:
                problems.append(f"--{what.replace('_', '-')} must be 0 or more, got {getattr(self, what)}")
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
    targets: dict[str, str] = field(default_factory=dict)  # before/after pairs: each input's target

    def photo_set(self) -> PhotoSet:
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(f"the run's photos at {root} are gone; put them back there to use this run")
        return PhotoSet(root, self.source, sorted(self.train + self.held_out))


@dataclass(frozen=True)
class Pictures:
    """Photos at the run's photo size and the teacher's pictures of them."""

    photos: np.ndarray
    teacher: np.ndarray | None  # None: a neural style, which has photos only


@dataclass
class StylizeResult:
    run_dir: Path
    epochs: int
    best_epoch: int
    best_psnr: float | None  # against the teacher or the pairs' targets
    best_ssim: float | None
    best_style_loss: float | None  # a neural style's, on the held-out photos
    best_content_loss: float | None
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
    found: PhotoSet | PairSet = find_pairs(cfg.data) if cfg.effect == PAIRS else find_photos(cfg.data, data_home)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(found.files))
    n = min(max(1, round(len(order) * cfg.subset)), cfg.max_images or DEFAULT_MAX_IMAGES)
    if n < 2:
        raise DataError(f"{found.root}: {n} photo(s) chosen of {len(found.files)}; a run needs at least 2 (one to "
                        "train on, one held out): add photos or raise --subset")
    chosen = [found.files[i] for i in order[:n]]
    held = max(1, round(n * cfg.val_fraction))
    if isinstance(found, PairSet):
        targets = {rel: found.targets[rel] for rel in chosen}
        fingerprint = PairSet(found.root, found.source, targets).fingerprint()
    else:
        targets, fingerprint = {}, PhotoSet(found.root, found.source, sorted(chosen)).fingerprint()
    return StylizeData(str(found.root.resolve()), found.source, sorted(chosen[held:]), sorted(chosen[:held]),
                       fingerprint, targets)


def teacher_pictures(cfg: StylizeConfig, data: StylizeData, show_progress: bool = False,
                     fresh: bool = False) -> tuple[Pictures, Pictures]:
    """(training, held-out) photos and their teacher's pictures (the pairs' targets; none for a neural
    style): read from the run's teacher.npz when it holds this run's, else computed once and written there. ``fresh`` (a new run, before its
    dataset.json is written): unreadable photos are left out of ``data``, each logged; otherwise the
    run's photos must all still read as they did."""
    path = cfg.out / TEACHER
    if path.is_file() and not fresh:
        with np.load(path) as z:
            if str(z["key"]) == _teacher_key(cfg, data):
                n = int(z["train"])
                if cfg.neural:
                    return Pictures(z["photos"][:n], None), Pictures(z["photos"][n:], None)
                return (Pictures(z["photos"][:n], z["teacher"][:n]), Pictures(z["photos"][n:], z["teacher"][n:]))
        log.info("%s belongs to other settings; computing the teacher's pictures again", path)
    root = data.photo_set().root
    teach = effect(cfg.effect) if cfg.effect in EFFECTS else None
    parts = []
    for files, what in ((data.train, "training"), (data.held_out, "held-out")):
        if cfg.effect == PAIRS:
            photos, targets, kept = load_pairs(root, data.targets, files, cfg.photo_size)
        else:
            photos, kept = load_squares(root, files, cfg.photo_size)
        if len(kept) < len(files) and not fresh:
            raise DataError(f"{root}: {len(files) - len(kept)} of the run's {what} photos cannot be read any more (see "
                            "the warnings above); put them back as they were, or train into a new --out")
        if not kept:
            raise DataError(f"{root}: none of the {len(files)} {what} photos can be read (see the warnings above); "
                            "pass --data DIR holding JPEG or PNG photos")
        files[:] = kept
        if teach is not None:
            with _bar(show_progress, f"teacher {cfg.effect}, {what} photos", len(photos)) as bar:
                pictures = []
                for p in photos:
                    pictures.append(teach(p))
                    bar.advance(0)
            parts.append(Pictures(photos, np.stack(pictures)))
        else:
            parts.append(Pictures(photos, targets if cfg.effect == PAIRS else None))
    train, held = parts
    teacher = (np.concatenate([train.teacher, held.teacher]) if train.teacher is not None and held.teacher is not None
               else np.zeros((0,), np.uint8))
    with atomic.temp_path_for(path) as tmp, tmp.open("wb") as f:
        np.savez(f, key=np.array(_teacher_key(cfg, data)), train=np.array(len(train.photos)),
                 photos=np.concatenate([train.photos, held.photos]), teacher=teacher)
    return train, held


def keep_style(cfg: StylizeConfig, style: np.ndarray) -> None:
    """Keep a new run's style picture in its folder: the run, its resume and its export read it there
    (the --style-image file may move or change)."""
    with atomic.temp_path_for(cfg.out / STYLE) as tmp:
        Image.fromarray(style).save(tmp, format="PNG")


def style_picture(cfg: StylizeConfig) -> np.ndarray:
    """A neural style run's picture, at the photos' scale, as the run folder keeps it."""
    path = cfg.out / STYLE
    if not path.is_file():
        raise CheckpointError(f"{cfg.out}: {STYLE} (the style picture this run learned) is missing; train again")
    return load_style(path, cfg.photo_size)


def _teacher_key(cfg: StylizeConfig, data: StylizeData) -> str:
    what = {"effect": EFFECTS[cfg.effect].teacher if cfg.effect in EFFECTS else cfg.effect, "size": cfg.photo_size,
            "train": data.train, "held_out": data.held_out, "fingerprint": data.fingerprint}
    if data.targets:
        what["targets"] = data.targets
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
    """Random ``crop`` squares of the photos ``idx`` and the same squares of their teacher's pictures
    (of the photos again for a neural style, which has none), half of them mirrored."""
    size = train.photos.shape[1]
    targets = train.teacher if train.teacher is not None else train.photos
    xs, ys = [], []
    for i in idx:
        y0, x0 = rng.integers(0, size - crop + 1, 2)
        x, y = train.photos[i, y0 : y0 + crop, x0 : x0 + crop], targets[i, y0 : y0 + crop, x0 : x0 + crop]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x)
        ys.append(y)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))


def style_loss_for(cfg: StylizeConfig, style: np.ndarray) -> StyleLoss:
    return StyleLoss(style, StyleWeights(cfg.style_weight, cfg.content_weight, cfg.tv_weight), seed=cfg.seed)


@torch.no_grad()
def style_scores(loss: StyleLoss, pictures: np.ndarray, photos: np.ndarray, batch: int = 8) -> dict[str, float]:
    """A neural style's held-out figures: its style and content losses (means over the photos) and the
    weighted total, the one that picks the best epoch."""
    sums = {"style": 0.0, "content": 0.0, "tv": 0.0}
    for i in range(0, len(photos), batch):
        parts = loss.parts(torch.from_numpy(pictures[i : i + batch]).float(), torch.from_numpy(photos[i : i + batch]).float())
        for k in sums:
            sums[k] += float(parts[k]) * len(photos[i : i + batch])
    scores = {k: v / len(photos) for k, v in sums.items()}
    w = loss.weights
    scores["total"] = w.style * scores["style"] + w.content * scores["content"] + w.tv * scores["tv"]
    return scores


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
    new_style: np.ndarray | None = None
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
        if cfg.style_image is not None:  # and a style picture that cannot be read
            new_style = load_style(Path(cfg.style_image), cfg.photo_size)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        train, held = teacher_pictures(cfg, data, show_progress, fresh=not resume)
        if new_style is not None:
            keep_style(cfg, new_style)
    except BaseException:
        if created:  # a new run that could not start leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    write_json(out / CONFIG, cfg.to_json())
    write_json(out / DATASET, asdict(data))
    provenance.record(out)  # the code's git commit, for the bundle's lineage

    style_pixels = style_picture(cfg) if cfg.neural else np.zeros((1, 1, 3), np.uint8)
    neural_loss = style_loss_for(cfg, style_pixels).to(device) if cfg.neural else None
    torch.manual_seed(cfg.seed)
    net_cfg = StylizeNetConfig() if state is None else StylizeNetConfig.from_dict(state["net"])
    model = PixelStylizer(StylizeNet(net_cfg)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = max(1, math.ceil(len(train.photos) / cfg.batch_size))
    history: list[dict[str, Any]] = []
    # The best epoch: the highest PSNR against the targets, or a neural style's lowest held-out loss.
    best: dict[str, Any] = ({"epoch": 0, "psnr": -1.0, "ssim": 0.0} if neural_loss is None
                            else {"epoch": 0, "loss": math.inf})
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
                pred = model.unclamped(torch.from_numpy(x).to(device))
                target = torch.from_numpy(y).to(device).float()
                loss = loss_fn(pred, target, cfg.grad_weight) if neural_loss is None else neural_loss(pred, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                value = loss.item()
                total += value
                bar.advance(value)
            student = stylize(model, held.photos, device)
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / steps}
            if neural_loss is None:
                assert held.teacher is not None
                row.update(val_psnr=psnr(student, held.teacher), val_ssim=ssim(student, held.teacher))
                improved = row["val_psnr"] > best["psnr"]
                if improved:
                    best = {"epoch": epoch + 1, "psnr": row["val_psnr"], "ssim": row["val_ssim"]}
            else:
                scores = style_scores(neural_loss.cpu(), student, held.photos)
                neural_loss.to(device)
                row.update(val_loss=scores["total"], val_style_loss=scores["style"], val_content_loss=scores["content"])
                improved = row["val_loss"] < best["loss"]
                if improved:
                    best = {"epoch": epoch + 1, "loss": row["val_loss"], "style_loss": scores["style"],
                            "content_loss": scores["content"]}
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            ckpt = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "net": net_cfg.to_dict(), "history": history, "best": best}
            if improved:  # best.pt first, as the classifier's trainer does
                checkpoint.save(out / checkpoint.BEST, ckpt)
            checkpoint.save(out / checkpoint.LAST, ckpt)
            write_json(out / HISTORY, history)
            if neural_loss is None:
                assert held.teacher is not None
                middle = {f"teacher ({cfg.effect})" if cfg.effect in EFFECTS else "target": held.teacher[sheet_idx]}
                said = f"held-out PSNR {row['val_psnr']:.2f} dB  SSIM {row['val_ssim']:.3f}"
            else:
                middle = {"style": np.stack([_square(style_pixels, held.photos.shape[1])] * len(sheet_idx))}
                said = f"held-out style loss {row['val_style_loss']:.4f}  content loss {row['val_content_loss']:.4f}"
            contact_sheet({"photo": held.photos[sheet_idx], **middle, "student": student[sheet_idx]}, out / SHEET,
                          f"epoch {epoch + 1}/{cfg.epochs}")
            bar.print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}  {said}  ({row['seconds']:.1f}s)")
    return StylizeResult(out, len(history), int(best["epoch"]), best.get("psnr"), best.get("ssim"),
                         best.get("style_loss"), best.get("content_loss"), time.perf_counter() - t_start,
                         len(train.photos), len(held.photos))


def _square(picture: np.ndarray, size: int) -> np.ndarray:
    """The middle square of a picture at ``size``×``size`` (a style picture in a contact sheet's column)."""
    return np.asarray(ImageOps.fit(Image.fromarray(picture), (size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
