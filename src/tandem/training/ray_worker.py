"""What each Ray Train worker runs: the same epoch loop as the local trainer on its rows of every
global batch, with DistributedDataParallel averaging the gradients over the workers.

Rank 0 validates, reports each epoch to Ray Train with a checkpoint folder in the run folder's
format (checkpoint.pt, best.pt, history.json), and sends step progress to the driver's bar.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from torch.nn.parallel import DistributedDataParallel

from tandem.models.mobilenet import NetConfig
from tandem.training import checkpoint
from tandem.training.loop import EpochLoop, Pixels, Shard
from tandem.training.run import HISTORY, TrainConfig, write_json

# The driver's bar need not see every step: each report wakes two other processes, and on a small
# machine any such wake-up stalls the training's thread team.
STEP_REPORT_S = 0.5


class _StepRelay:
    def __init__(self, board: Any) -> None:
        self.board = board
        self.last = 0.0

    def __call__(self, epoch: int, batch: int, loss: float, acc: float) -> None:
        now = time.monotonic()
        if now - self.last >= STEP_REPORT_S:
            self.last = now
            self.board.push.remote({"step": (epoch, batch, loss, acc)})


def train_worker(config: dict[str, Any]) -> None:
    ctx = ray.train.get_context()
    shard = Shard(ctx.get_world_rank(), ctx.get_world_size())
    torch.set_num_threads(config["threads"])
    cfg: TrainConfig = config["cfg"]
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    with warnings.catch_warnings():
        # The arrays come read-only from Ray's object store (shared, not copied); nothing writes them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        pixels: Pixels = ray.get(config["pixels"])
        state, best = ray.get(config["state"]), ray.get(config["best"])
        restored = ray.train.get_checkpoint()
        if restored is not None:  # Ray restarted this worker group after a failure: go on from its last report
            with restored.as_directory() as d:
                state = checkpoint.load(Path(d) / checkpoint.LAST)
                best = checkpoint.load(Path(d) / checkpoint.BEST) if (Path(d) / checkpoint.BEST).exists() else None

        def wrap(model: torch.nn.Module) -> torch.nn.Module:
            return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

        loop = EpochLoop(cfg, NetConfig.from_dict(config["net"]), pixels, device, state, shard,
                         wrap if shard.world > 1 else None, sync_batchnorm=config["sync_batchnorm"])
    relay = _StepRelay(config["board"]) if shard.rank == 0 and config["progress"] else None
    # best.pt lives here between epochs, so every reported checkpoint folder can carry it.
    staging = Path(tempfile.mkdtemp(prefix="tandem-best-"))
    try:
        if best is not None:
            checkpoint.save(staging / checkpoint.BEST, best)
        for epoch in range(loop.start, loop.last_epoch()):
            row, improved = loop.run_epoch(epoch, relay)
            if shard.rank != 0:
                ray.train.report({"epoch": epoch + 1}, checkpoint=None)  # a barrier: every worker reports
                continue
            ckpt = loop.checkpoint(config["classes"])
            if improved:
                checkpoint.save(staging / checkpoint.BEST, ckpt)
            with tempfile.TemporaryDirectory(prefix="tandem-ckpt-", ignore_cleanup_errors=True) as d:
                if (staging / checkpoint.BEST).exists():
                    shutil.copy2(staging / checkpoint.BEST, Path(d) / checkpoint.BEST)
                checkpoint.save(Path(d) / checkpoint.LAST, ckpt)
                write_json(Path(d) / HISTORY, loop.history)
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
