"""`tandem train --objective embed`: a face embedding for people the network never saw.

The photos are aligned first (tandem.faces: five landmarks → ArcFace's template), split by
identity (validation and test people never train), and the network learns with a margin loss on
the training identities — Sub-center ArcFace from pytorch-metric-learning (Deng et al. 2020), chosen
over hand-written code because it is maintained, tested and has the sub-centres that tolerate the
label noise of web photos — and, with ``--teacher dlib``, by distillation from a strong teacher
(training/teacher.py). Each epoch is validated as the product is used: verification of pairs of
validation people, never seen in training; the best epoch is the one that tells them apart best.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from tandem.data import load_catalog
from tandem.data.catalog import ImageCatalog
from tandem.data.faces import AlignedFaces, align_catalog, face_box, report_skipped_faces
from tandem.data.lfw_pairs import people_of, read_pairs
from tandem.data.split import Split, identity_split, stratified_subset
from tandem.errors import ConfigError, DataError
from tandem.faces import metrics
from tandem.faces.align import AlignSpec, Landmarker
from tandem.models import build_face_net
from tandem.models.mobilenet import STAGES, NetConfig
from tandem.training import checkpoint
from tandem.training.augment import AugmentConfig, apply, draw
from tandem.training.loop import batches, lr_at, to_float
from tandem.training.regions import RegionMasks
from tandem.training.run import DATASET, RunData, TrainConfig, write_json
from tandem.training.trainer import TrainResult, open_run, resolve_device, run_epochs, write_run_files

if TYPE_CHECKING:
    from tandem.models import FaceNet

log = logging.getLogger(__name__)

LANDMARKS = "landmarks.onnx"
TEACHER_CACHE = "teacher.npz"
# LFW's pairs.txt folds whose people are held out of training (0-based: folds 9 and 10), so that the
# verification figures are on people the network never saw.
HELD_OUT_FOLDS = {8, 9}
VAL_PAIRS = 3000


BACKBONES = ("dlib", "mobile")
# Fine-tuning a pretrained backbone moves it gently. Measured on LFW (validation people's
# verification, pretrained 0.979): 1e-4 on 1,500 photos lowered it (0.971, 0.973 after two epochs);
# 2e-5 on all 9,147 training photos raised it (0.978, 0.981), with open-set top-1 0.986 → 0.989.
FINE_TUNE_LR = 2e-5


def align_spec(cfg: TrainConfig) -> AlignSpec:
    if cfg.backbone == "dlib":
        from tandem.models.dlib_resnet import CHIP_TEMPLATE, SIZE

        k = cfg.align_size / SIZE
        return AlignSpec(cfg.align_size, cfg.align_size, tuple((round(x * k, 4), round(y * k, 4)) for x, y in CHIP_TEMPLATE))
    return AlignSpec.square(cfg.align_size, cfg.align_zoom)


def landmarker(run_dir: Path) -> Landmarker:
    """The landmark network as ONNX in the run folder (exported once), so training crops come from
    the very file the bundle ships."""
    path = run_dir / LANDMARKS
    if not path.is_file():
        from tandem import atomic
        from tandem.models.onet import export_landmarker

        with atomic.temp_path_for(path) as tmp:
            export_landmarker(tmp)
    return Landmarker(path, threads=max(1, len(os.sched_getaffinity(0))))


def _held_out_classes(catalog: ImageCatalog) -> set[int]:
    if catalog.source != "lfw":
        return set()
    pairs = read_pairs(catalog.root.parent / "pairs.txt")
    held = people_of(pairs, HELD_OUT_FOLDS)
    return {i for i, name in enumerate(catalog.classes) if name in held}


def prepare_embed_run(cfg: TrainConfig, data_home: Path | None = None) -> RunData:
    catalog = load_catalog(cfg.data, cfg.min_faces, data_home)
    labels = [r.label for r in catalog.records]
    keep = stratified_subset(labels, cfg.subset, cfg.seed, min_per_class=1)
    test_classes = _held_out_classes(catalog)
    catalog = catalog.subset(keep)
    labels = [r.label for r in catalog.records]
    split = identity_split(labels, cfg.val_fraction, cfg.seed, test_classes)
    if cfg.max_images is not None and len(split.train) > cfg.max_images:
        # Without a teacher only the margin loss teaches, and it learns nothing from a person's single
        # photo: the budget then goes to people with two or more, two photos at a time.
        pairs = cfg.teacher == "none"
        split = Split(spread(split.train, labels, cfg.max_images, cfg.seed, 2 if pairs else 1), split.val, split.test)
    return RunData.from_catalog(catalog, split)


def spread(indices: list[int], labels: list[int], n: int, seed: int, per_turn: int = 1) -> list[int]:
    """``n`` of ``indices``, taken ``per_turn`` photos of one person at a time in a seeded order: as
    many people as possible. People with fewer than ``per_turn`` photos are left out while others
    have enough to fill ``n``."""
    rng = np.random.default_rng(seed)
    by: dict[int, list[int]] = {}
    for i in indices:
        by.setdefault(labels[i], []).append(i)
    queues = [rng.permutation(v).tolist() for _, v in sorted(by.items())]
    if sum(len(q) for q in queues if len(q) >= per_turn) >= n:
        queues = [q for q in queues if len(q) >= per_turn]
    order = rng.permutation(len(queues))
    picked: list[int] = []
    while len(picked) < n:
        for k in order:
            take = min(per_turn, len(queues[k]), n - len(picked))
            picked.extend(queues[k].pop() for _ in range(take))
    return sorted(picked)


def open_embed_run(cfg: TrainConfig, resume: bool, data_home: Path | None = None) -> tuple[RunData, dict | None]:
    return open_run(cfg, resume, prepare_embed_run, data_home)


@dataclass
class FaceSet:
    """Aligned crops of one part of the split, with their identities and (optionally) teacher targets."""

    pixels: np.ndarray
    labels: np.ndarray  # the catalog's class index
    files: list[str]
    teacher: np.ndarray | None = None


def load_faces(cfg: TrainConfig, data: RunData, part: str, run_dir: Path, show_progress: bool = False,
               skipped: dict[str, int] | None = None) -> FaceSet:
    """``part``'s faces, aligned; with ``skipped``, what was skipped is only counted there (align_catalog)."""
    catalog = data.part(part)
    if not catalog.records:
        return FaceSet(np.zeros((0, cfg.align_size, cfg.align_size, 3), np.uint8), np.zeros(0, np.int64), [])
    from rich.progress import Progress

    with Progress(disable=not show_progress) as bar:
        task = bar.add_task(f"aligning {part} faces", total=len(catalog.records))
        faces: AlignedFaces = align_catalog(catalog, align_spec(cfg), landmarker(run_dir),
                                            lambda n: bar.advance(task, n), skipped=skipped)
    files = [catalog.records[i].path.relative_to(catalog.root).as_posix() for i in faces.kept]
    data.notes = sorted(set(data.notes) | {f"{part}: {n}" for n in catalog.notes})
    return FaceSet(faces.pixels, faces.labels, files)


def add_teacher(cfg: TrainConfig, data: RunData, faces: FaceSet, run_dir: Path, show_progress: bool) -> None:
    if cfg.teacher == "none" or not faces.files:
        return
    from rich.progress import Progress

    from tandem.training.teacher import teacher_embeddings

    root = data.catalog().root
    paths = [root / f for f in faces.files]
    fixed = face_box(data.catalog())
    boxes: list[tuple[float, float, float, float] | None] = []
    for p in paths:
        if fixed is None:
            boxes.append(None)  # the teacher looks in the middle of the photo: folders hold face photos
            continue
        from PIL import Image

        with Image.open(p) as img:
            w, h = img.size
        boxes.append((fixed[0] * w, fixed[1] * h, fixed[2] * w, fixed[3] * h))
    with Progress(disable=not show_progress) as bar:
        task = bar.add_task("teacher (dlib) embeddings", total=len(paths))
        faces.teacher = teacher_embeddings(paths, boxes, faces.files, run_dir / TEACHER_CACHE,
                                           lambda n: bar.advance(task, n))


def verification_pairs(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``n`` same-person pairs and as many different-person pairs, deterministic by seed."""
    rng = np.random.default_rng(seed)
    by = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    same = [(i, j) for idx in by.values() for k, i in enumerate(idx) for j in idx[k + 1 :]]
    if len(same) > n:
        same = [same[k] for k in rng.choice(len(same), n, replace=False)]
    diff: list[tuple[int, int]] = []
    while len(diff) < len(same) and len(by) > 1:
        i, j = rng.integers(0, len(labels), 2)
        if labels[i] != labels[j]:
            diff.append((int(i), int(j)))
    pairs = np.array(same + diff, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], np.array([True] * len(same) + [False] * len(diff))


@torch.no_grad()
def embed_pixels(net: FaceNet, pixels: np.ndarray, device: torch.device, batch: int = 256) -> np.ndarray:
    """Unit embeddings in eval mode."""
    net.eval()
    out = []
    for i in range(0, len(pixels), batch):
        x = to_float(torch.from_numpy(pixels[i : i + batch])).to(device)
        out.append(F.normalize(net(x)[1], dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.cfg.embedding_dim), np.float32)


class EmbedLoop:
    """The network, the margin loss's class centres, the optimiser, the schedule and the history."""

    def __init__(self, cfg: TrainConfig, net_cfg: NetConfig, train: FaceSet, val: FaceSet, device: torch.device,
                 state: dict[str, Any] | None = None) -> None:
        from pytorch_metric_learning.losses import SubCenterArcFaceLoss

        self.cfg, self.device, self.train, self.val = cfg, device, train, val
        torch.manual_seed(cfg.seed)
        self.net = build_face_net(net_cfg, pretrained=state is None).to(device)
        # Margin-loss classes: training people with two photos or more (one photo has nothing to pull towards).
        counts = np.bincount(train.labels)
        classes = np.flatnonzero(counts >= 2)
        self.class_of = {int(c): k for k, c in enumerate(classes)}
        self.targets = torch.tensor([self.class_of.get(int(c), -1) for c in train.labels])
        self.arc = SubCenterArcFaceLoss(num_classes=max(1, len(classes)), embedding_size=net_cfg.embedding_dim,
                                        margin=cfg.arc_margin, scale=cfg.arc_scale, sub_centers=3).to(device)
        self.teacher: torch.Tensor | None = None
        if train.teacher is not None:
            from tandem.training.teacher import centred

            ok = np.isfinite(train.teacher).all(1)
            mean = _unit(train.teacher[ok]).mean(0)
            t = centred(np.nan_to_num(train.teacher), mean)
            t[~ok] = 0.0  # unreadable for the teacher: no distillation pull on that photo
            self.teacher = torch.from_numpy(t.astype(np.float32))
            self.teacher_mean = mean
        self.opt = torch.optim.AdamW([
            {"params": self.net.parameters(), "weight_decay": cfg.weight_decay},
            {"params": self.arc.parameters(), "weight_decay": 0.0},
        ], lr=cfg.lr)
        self.regions = RegionMasks(align_spec(cfg))
        self.aug = AugmentConfig(scale=(0.9, 1.1), rotate_deg=8.0, shift=0.05, brightness=0.2, contrast=0.2,
                                 saturation=0.2)
        self.pixels = torch.from_numpy(train.pixels)
        self.steps_per_epoch = len(batches(torch.arange(len(train.pixels)), cfg.batch_size))
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        self.pairs = verification_pairs(val.labels, VAL_PAIRS, cfg.seed)
        self.history: list[dict[str, Any]] = []
        self.best_val, self.best_epoch, self.start = -1.0, 0, 0
        if state is not None:
            self.net.load_state_dict(state["model"])
            self.arc.load_state_dict(state["margin_loss"])
            self.opt.load_state_dict(state["optimizer"])
            self.history, self.best_val, self.best_epoch, self.start = (
                list(state["history"]), state["best_val_acc"], state["best_epoch"], state["epoch"])
        elif net_cfg.arch != "mobile":
            self.start_from_pretrained()

    def start_from_pretrained(self) -> None:
        """A pretrained backbone is epoch 0: validated as it is (it is the best epoch until one
        beats it, so fine-tuning can never ship a worse network than it started from), and each
        training person's margin-loss centres start at the mean of their photos' embeddings
        (weight imprinting, Qi et al. 2018), so the first steps pull towards sensible targets
        instead of tearing the pretrained features apart towards random ones."""
        self.best_val, _ = self.validate()
        if math.isnan(self.best_val):
            self.best_val = -1.0
        e = torch.from_numpy(embed_pixels(self.net, self.train.pixels, self.device))
        w = self.arc.W
        k = self.arc.sub_centers
        with torch.no_grad():
            for c, col in self.class_of.items():
                mean = F.normalize(e[torch.from_numpy(self.train.labels == c)].mean(0), dim=0).to(w.device)
                for j in range(k):
                    w[:, col * k + j] = mean + 0.01 * torch.randn_like(mean)

    def last_epoch(self) -> int:
        return self.cfg.epochs if self.cfg.stop_after is None else max(self.start, self.cfg.stop_after)

    def run_epoch(self, epoch: int, on_step: Any = None) -> tuple[dict[str, Any], bool]:
        cfg = self.cfg
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        self.net.train()
        seen, loss_sum, kd_sum = 0, 0.0, 0.0
        perm = torch.randperm(len(self.pixels), generator=g)
        for b, idx in enumerate(batches(perm, cfg.batch_size)):
            step = epoch * self.steps_per_epoch + b
            for group in self.opt.param_groups:
                group["lr"] = lr_at(step, self.total_steps, self.warmup, cfg.lr)
            x = to_float(self.pixels[idx])
            x = apply(x, draw(x.shape, self.aug, g))
            x = self.regions.apply(x, cfg.region_views, g, self.net.mean)
            x = x.to(self.device)
            _, emb = self.net(x)
            loss = torch.zeros((), device=self.device)
            y = self.targets[idx]
            labelled = y >= 0
            if cfg.arc_weight > 0 and int(labelled.sum()) >= 2:
                loss = loss + cfg.arc_weight * self.arc(emb[labelled.to(self.device)], y[labelled].to(self.device))
            if self.teacher is not None and cfg.kd_weight > 0:
                t = self.teacher[idx].to(self.device)
                cos = (F.normalize(emb, dim=1) * t).sum(1)
                has = (t.abs().sum(1) > 0).float()
                kd = ((1 - cos) * has).sum() / has.sum().clamp(min=1)
                # ×10: a cosine gap of 0.1 then weighs about as much as the margin loss at its plateau.
                loss = loss + cfg.kd_weight * 10.0 * kd
                kd_sum += float(kd.detach()) * len(idx)
            if loss.requires_grad:  # else: a batch with nothing to learn from (no person twice, no teacher)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            if on_step is not None:
                on_step(epoch, b, loss_sum / seen, 1 - kd_sum / seen if self.teacher is not None else float("nan"))
        self.recalibrate_batchnorm(epoch)
        val_acc, val_auc = self.validate()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen,
               "train_acc": 1 - kd_sum / seen if self.teacher is not None else float("nan"),
               "val_loss": 1 - val_auc if not math.isnan(val_auc) else float("nan"), "val_acc": val_acc,
               "val_auc": val_auc, "lr": self.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
               "device": self.device.type}
        self.history.append(row)
        score = val_acc if not math.isnan(val_acc) else -row["train_loss"]
        improved = score >= self.best_val
        if improved:
            self.best_val, self.best_epoch = score, epoch + 1
        return row, improved

    @torch.no_grad()
    def recalibrate_batchnorm(self, epoch: int, images: int = 1024) -> None:
        """BatchNorm's running statistics measured afresh on clean training photos (a cumulative
        average, not the training-time moving average). After a short run the moving average still
        lags the weights, every embedding then shares its offset and all faces look alike (measured:
        cosine 1.0 between strangers after 3 epochs); this pass costs one forward over ``images``."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch + 7)
        idx = torch.randperm(len(self.pixels), generator=g)[:images]
        bns = [m for m in self.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.net.train()
        for chunk in idx.split(self.cfg.batch_size):
            if len(chunk) >= 2:
                self.net(to_float(self.pixels[chunk]).to(self.device))
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum

    def validate(self) -> tuple[float, float]:
        """Verification accuracy (best threshold) and ROC AUC on pairs of validation people."""
        a, b, same = self.pairs
        if len(same) == 0 or not same.any() or same.all():
            return float("nan"), float("nan")
        e = embed_pixels(self.net, self.val.pixels, self.device)
        s = (e[a] * e[b]).sum(1)
        t = metrics.best_threshold(s, same)
        return float(((s >= t) == same).mean()), metrics.auc(s, same)

    def checkpoint(self, classes: list[str]) -> dict[str, Any]:
        return {
            "epoch": len(self.history), "net": self.net.cfg.to_dict(), "model": self.net.state_dict(),
            "margin_loss": self.arc.state_dict(), "optimizer": self.opt.state_dict(), "history": self.history,
            "best_val_acc": self.best_val, "best_epoch": self.best_epoch, "classes": classes,
            "objective": "embed", "align": align_spec(self.cfg).to_json(),
        }


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def embed_net_config(cfg: TrainConfig, train: FaceSet, state: dict | None) -> NetConfig:
    if state is not None:
        return NetConfig.from_dict(state["net"])
    if cfg.backbone == "dlib":
        from tandem.models.dlib_resnet import dlib_net_config

        return dlib_net_config()
    flat = train.pixels.reshape(-1, 3)
    m, s = flat.mean(0) / 255.0, flat.std(0) / 255.0 + 1e-3
    mean, std = (float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2]))
    # A face network keeps more of the face's layout than a classifier: the last stage keeps its
    # resolution (total stride 16, as MobileFaceNet) and a global depthwise convolution weighs each
    # place of the final map. Measured here (64×64, distillation, 3 epochs): verification of unseen
    # people 0.727 → 0.755, for 10% more compute.
    stages = (*STAGES[:-1], (*STAGES[-1][:3], 1))
    stride = cfg.stem_stride * 8
    return NetConfig(num_classes=1, embedding_dim=cfg.embedding_dim, width=cfg.width_mult, stem_stride=cfg.stem_stride,
                     mean=mean, std=std, dropout=0.0, stages=stages, gdc_size=-(-cfg.align_size // stride))


def check_embed_config(cfg: TrainConfig) -> None:
    problems = []
    if cfg.teacher not in ("none", "dlib"):
        problems.append(f"--teacher {cfg.teacher!r}: use none or dlib")
    if cfg.backbone not in BACKBONES:
        problems.append(f"--backbone {cfg.backbone!r}: use {' or '.join(BACKBONES)}")
    if cfg.backbone == "dlib" and cfg.align_size != 150:
        problems.append(f"--size {cfg.align_size}: the dlib backbone reads 150-pixel faces (leave --size out)")
    if cfg.backbone == "dlib" and cfg.embedding_dim != 128:
        problems.append("the dlib backbone gives 128-dimensional embeddings")
    if cfg.align_size < 32:
        problems.append(f"--size {cfg.align_size}: at least 32 pixels")
    if cfg.arc_weight <= 0 and (cfg.teacher == "none" or cfg.kd_weight <= 0):
        problems.append("nothing to learn from: give --arc-weight > 0 or --teacher dlib with --kd-weight > 0")
    if not 0 <= cfg.region_views < 1:
        problems.append(f"--region-views {cfg.region_views}: a share from 0 to below 1")
    if cfg.max_images is not None and cfg.max_images < 2:
        problems.append(f"--max-images {cfg.max_images}: at least 2")
    if problems:
        raise ConfigError("; ".join(problems))


def train_embed(cfg: TrainConfig, resume: bool = False, show_progress: bool = True,
                data_home: Path | None = None) -> TrainResult:
    """``data_home``: where LFW is (TANDEM_DATA_HOME), for ``--data lfw``."""
    t_start = time.perf_counter()
    cfg.validate()
    check_embed_config(cfg)
    device = resolve_device(cfg.device)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    data, state = open_embed_run(cfg, resume, data_home)
    skipped: dict[str, int] = {}  # counted once for the dataset, not once per part
    train = load_faces(cfg, data, "train", cfg.out, show_progress, skipped)
    val = load_faces(cfg, data, "val", cfg.out, show_progress, skipped)
    notes = report_skipped_faces(data.root, skipped, len(data.split["train"]) + len(data.split["val"]),
                                 "training and validation")
    data.notes = sorted(set(data.notes) | set(notes))
    if len(train.pixels) < 2:
        raise DataError(f"{data.root}: fewer than two training faces were found; add photos")
    add_teacher(cfg, data, train, cfg.out, show_progress)
    net_cfg = embed_net_config(cfg, train, state)
    write_run_files(cfg, data)
    write_json(cfg.out / DATASET, data.to_json())
    loop = EmbedLoop(cfg, net_cfg, train, val, device, state)
    if state is None and net_cfg.arch != "mobile":
        # The pretrained network is epoch 0's best: exported as it is unless an epoch beats it.
        checkpoint.save(cfg.out / checkpoint.BEST, loop.checkpoint(data.classes))
        log.info("pretrained %s: validation verification %.4f", net_cfg.arch, loop.best_val)
    run_epochs(loop, cfg, data.classes, show_progress)
    final = checkpoint.load(cfg.out / checkpoint.LAST)
    return TrainResult(cfg.out, len(final["history"]), final["best_epoch"], final["best_val_acc"],
                       time.perf_counter() - t_start, len(train.pixels), len(set(train.labels.tolist())))

