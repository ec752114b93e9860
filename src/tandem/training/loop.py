"""The epoch loop that the local trainer and every Ray Train worker run: AdamW, warm-up then cosine
decay, label smoothing.

Every random draw of an epoch (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
run stopped after epoch k and resumed gives the same weights as one that never stopped. Data
parallel workers draw the same permutation and the same augmentation for the whole global batch and
each trains on its own rows of it, with BatchNorm statistics and dropout masks over the whole
global batch (sync.py): N workers compute what one worker computes, up to the order of float sums.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tandem.models.mobilenet import EmbeddingNet, NetConfig
from tandem.training.augment import AugmentConfig, apply, draw
from tandem.training.run import TrainConfig
from tandem.training.sync import GlobalBatch, shard_model

# (epoch, batch index within the epoch, running train loss, running train accuracy)
StepHook = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class Shard:
    """Which rows of every global batch this process trains on: rank r of N takes rows r, r+N, …
    (DistributedSampler's interleaving, applied per batch), so the shards of one global batch
    together are exactly the batch a single worker would train on."""

    rank: int = 0
    world: int = 1

    @property
    def rows(self) -> slice:
        return slice(self.rank, None, self.world)


@dataclass
class Pixels:
    """The run's images as uint8 N×H×W×3 arrays, and their labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [0, 1], of torch's default dtype (float32 unless a test
    checks data parallelism in float64, where float32 rounding cannot hide a real difference)."""
    return pixels.permute(0, 3, 1, 2).to(torch.get_default_dtype()).div_(255.0)


def batches(perm: torch.Tensor, size: int, min_rows: int = 2) -> list[torch.Tensor]:
    """``perm`` cut into batches of ``size``; a last batch under ``min_rows`` joins the one before,
    because BatchNorm cannot train on one image (per worker: ``min_rows`` is 2 × workers)."""
    chunks = list(perm.split(size))
    if len(chunks) > 1 and len(chunks[-1]) < min_rows:
        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


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


@torch.no_grad()
def evaluate(model: EmbeddingNet, x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[float, float]:
    if len(y) == 0:
        return float("nan"), float("nan")
    logits, _ = infer(model, x, device)
    lt = torch.from_numpy(logits)
    loss = float(F.cross_entropy(lt, torch.from_numpy(y)))
    return loss, float((lt.argmax(1).numpy() == y).mean())


class EpochLoop:
    """The model, its optimiser and the schedule; ``run_epoch`` trains one epoch and keeps the
    history. ``wrap`` puts the model in DistributedDataParallel on a worker of several."""

    def __init__(self, cfg: TrainConfig, net_cfg: NetConfig, pixels: Pixels, device: torch.device,
                 state: dict[str, Any] | None = None, shard: Shard = Shard(),
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None, sync_batchnorm: bool = True) -> None:
        self.cfg, self.net_cfg, self.pixels, self.device, self.shard = cfg, net_cfg, pixels, device, shard
        torch.manual_seed(cfg.seed)
        self.model = EmbeddingNet(net_cfg).to(device)
        self.global_batch = GlobalBatch(take=shard.rows)
        if shard.world > 1:
            shard_model(self.model, self.global_batch, sync_batchnorm)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.history: list[dict[str, Any]] = []
        self.best_val, self.best_epoch, self.start = -1.0, 0, 0
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.history, self.best_val, self.best_epoch, self.start = (
                list(state["history"]), state["best_val_acc"], state["best_epoch"], state["epoch"])
        # Wrapped after loading: DistributedDataParallel copies rank 0's weights to the others.
        self.net = wrap(self.model) if wrap is not None else self.model
        self.aug_cfg = AugmentConfig()
        self.train_t = torch.from_numpy(pixels.train_x)
        self.train_lbl = torch.from_numpy(pixels.train_y)
        self.min_rows = 2 * shard.world
        self.steps_per_epoch = len(batches(torch.arange(len(pixels.train_x)), cfg.batch_size, self.min_rows))
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup = int(cfg.warmup_epochs * self.steps_per_epoch)

    def last_epoch(self) -> int:
        """Where this call stops: --epochs, or --stop-after."""
        return self.cfg.epochs if self.cfg.stop_after is None else max(self.start, self.cfg.stop_after)

    def run_epoch(self, epoch: int, on_step: StepHook | None = None) -> tuple[dict[str, Any], bool]:
        """Train epoch ``epoch`` (0-based); return its history row and whether it is the best yet.
        On a worker of several, the row's train metrics cover every worker's rows; only rank 0
        validates (the others' rows say NaN)."""
        cfg, shard = self.cfg, self.shard
        t0 = time.perf_counter()
        # Every worker seeds alike: each draws the whole global batch's dropout mask and keeps its rows.
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        self.net.train()
        seen, loss_sum, correct = 0, 0.0, 0
        perm = torch.randperm(len(self.train_t), generator=g)
        for b, idx in enumerate(batches(perm, cfg.batch_size, self.min_rows)):
            step = epoch * self.steps_per_epoch + b
            for group in self.opt.param_groups:
                group["lr"] = lr_at(step, self.total_steps, self.warmup, cfg.lr)
            mine = idx[shard.rows]
            self.global_batch.rows = len(idx)
            x = to_float(self.train_t[mine])
            if cfg.augment:
                # Drawn for the whole global batch (the generator advances as on one worker), applied to ours.
                x = apply(x, draw((len(idx), *x.shape[1:]), self.aug_cfg, g).rows(shard.rows))
            x, y = x.to(self.device), self.train_lbl[mine].to(self.device)
            logits, _ = self.net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            # DistributedDataParallel averages the workers' gradients; weighting each worker's mean
            # by its share of the batch makes that average the whole batch's mean even when the
            # shards differ by a row.
            scaled = loss if shard.world == 1 else loss * (len(mine) * shard.world / len(idx))
            self.opt.zero_grad(set_to_none=True)
            scaled.backward()
            self.opt.step()
            n = len(mine)
            seen += n
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(1) == y).sum())
            if on_step is not None:
                on_step(epoch, b, loss_sum / seen, correct / seen)
        if shard.world > 1:
            loss_sum, correct, seen = _sum_over_workers(loss_sum, correct, seen, self.device)

        if shard.rank == 0:
            val_loss, val_acc = evaluate(self.model, self.pixels.val_x, self.pixels.val_y, self.device)
        else:
            val_loss = val_acc = float("nan")
        row = {
            "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "val_loss": val_loss, "val_acc": val_acc, "lr": self.opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0, "device": self.device.type,
        }
        if shard.world > 1:
            row["workers"] = shard.world
        self.history.append(row)
        score = val_acc if not math.isnan(val_acc) else row["train_acc"]
        improved = score >= self.best_val
        if improved:
            self.best_val, self.best_epoch = score, epoch + 1
        return row, improved

    def checkpoint(self, classes: list[str]) -> dict[str, Any]:
        """What checkpoint.pt holds after the last epoch run (the unwrapped model's weights)."""
        return {
            "epoch": len(self.history), "net": self.net_cfg.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "history": self.history, "best_val_acc": self.best_val,
            "best_epoch": self.best_epoch, "classes": classes,
        }


def _sum_over_workers(loss_sum: float, correct: int, seen: int, device: torch.device) -> tuple[float, int, int]:
    import torch.distributed as dist

    # float64: the sums must not lose digits that one worker's history would keep.
    t = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0]), int(t[1]), int(t[2])
