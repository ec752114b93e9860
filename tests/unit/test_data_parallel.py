"""Data-parallel training computes what one worker computes: the same augmentation and dropout per
image, BatchNorm over the global batch, the global batch's mean gradient (two gloo processes, no Ray).

The step is compared in float64. In float32 the two differ by rounding, which a freshly initialised
network amplifies (BatchNorm channels of tiny variance): about 0.3% of the first gradient on LFW
photos, the same order as running the plain trainer on 1 thread instead of 2 moves its results later
on. float64 leaves nothing to blame on rounding: the step must agree to 1e-9.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image

from tandem.models.mobilenet import NetConfig
from tandem.training.augment import AugmentConfig, apply, augment, draw
from tandem.training.loop import EpochLoop, Pixels, Shard
from tandem.training.run import TrainConfig
from tandem.training.sync import GlobalBatch, shard_model

ROWS = 24  # one global batch of 24 rows: 12 per worker, a single optimiser step


def test_augmentation_drawn_for_the_global_batch_gives_each_row_what_one_worker_gives_it():
    x = torch.rand(7, 3, 20, 15)
    cfg = AugmentConfig(brightness=0.2, contrast=0.2, saturation=0.2, erase_p=0.5)
    whole = augment(x, cfg, torch.Generator().manual_seed(3))
    for rows in (slice(0, None, 2), slice(1, None, 2)):
        part = apply(x[rows], draw(x.shape, cfg, torch.Generator().manual_seed(3)).rows(rows))
        assert torch.equal(part, whole[rows])


def test_sharded_dropout_keeps_the_mask_one_worker_would_draw():
    x = torch.rand(10, 64)
    torch.manual_seed(5)
    whole = F.dropout(x, 0.2, training=True)
    for rank in (0, 1):
        layer = torch.nn.Dropout(0.2)
        batch = GlobalBatch(rows=10, take=slice(rank, None, 2))
        holder = torch.nn.Sequential(layer)
        shard_model(holder, batch)
        torch.manual_seed(5)
        assert torch.equal(holder(x[batch.take]), whole[batch.take])


def _pixels(lfw_people: Path) -> Pixels:
    people = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"]
    files = [(i, f) for i, p in enumerate(people) for f in sorted((lfw_people / p).glob("*.jpg"))[: ROWS // 3]]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((75, 100))) for _, f in files])
    return Pixels(x, np.array([i for i, _ in files], np.int64), np.zeros((0, 100, 75, 3), np.uint8), np.zeros(0, np.int64))


def _one_step(pixels: Pixels, shard: Shard, sync: bool, wrap=None) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    """(train loss, AdamW's first moment = 0.1 × the step's gradient, BatchNorm buffers) after one
    step of a global batch of all ``pixels``, in float64."""
    cfg = TrainConfig(data="-", out=Path("-"), epochs=1, batch_size=ROWS, stem_stride=2, seed=0)
    torch.set_default_dtype(torch.float64)
    try:
        loop = EpochLoop(cfg, NetConfig(num_classes=3, stem_stride=2), pixels, torch.device("cpu"), None, shard, wrap,
                         sync_batchnorm=sync)
        row, _ = loop.run_epoch(0)
    finally:
        torch.set_default_dtype(torch.float32)
    names = {id(p): n for n, p in loop.model.named_parameters()}
    moments = {names[id(p)]: s["exp_avg"].numpy().copy() for p, s in loop.opt.state.items()}
    buffers = {n: b.numpy().copy() for n, b in loop.model.named_buffers() if b.dtype != torch.int64}
    return row["train_loss"], moments, buffers


def _worker(rank: int, port: int, pixels: Pixels, results) -> None:  # type: ignore[no-untyped-def]
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        for sync in (True, False):
            out = _one_step(pixels, Shard(rank, 2), sync, DistributedDataParallel)
            if rank == 0:
                results.put((sync, out))
    finally:
        dist.destroy_process_group()


def _rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    num = sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a)
    return (num / sum(float((a[k].astype(np.float64) ** 2).sum()) for k in a)) ** 0.5


def test_two_workers_take_the_step_one_worker_takes(lfw_people):
    pixels = _pixels(lfw_people)
    loss1, grad1, buf1 = _one_step(pixels, Shard(), sync=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, pixels, results)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in range(2))
    for p in procs:
        p.join(60)
    loss2, grad2, buf2 = got[True]
    # The forward pass, the gradient and BatchNorm's running statistics, up to float64 rounding.
    assert abs(loss2 - loss1) <= 1e-12 * loss1
    assert _rel(grad1, grad2) < 1e-9
    assert max(float(np.abs(buf1[k] - buf2[k]).max()) for k in buf1) < 1e-12
    # Plain DistributedDataParallel (BatchNorm per shard) takes another step: what sync.py is for.
    loss_plain, grad_plain, _ = got[False]
    assert abs(loss_plain - loss1) > 1e-4 * loss1 and _rel(grad1, grad_plain) > 1e-2
