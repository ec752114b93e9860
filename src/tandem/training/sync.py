"""What makes N data-parallel workers train as one worker on the same global batch: BatchNorm
statistics over the whole global batch (not each worker's shard), and dropout masks drawn for the
whole global batch and cut like the rows.

With both, and the shuffle and augmentation drawn per global batch (loop.py), N workers compute
what one worker computes, up to the order of floating-point sums. Plain DistributedDataParallel
keeps BatchNorm per shard, which measured here (LFW, 3 people, 10 epochs of 16-image batches, 2
workers) cost 0.13 of validation accuracy. torch.nn.SyncBatchNorm would do the statistics part,
but only on GPUs; this one runs on whatever torch.distributed runs on (gloo on CPUs, NCCL on GPUs).
It costs two small collectives per BatchNorm layer and step (forward statistics, backward sums):
on this 2-core machine about 0.1 s per step of 2 workers; TANDEM_RAY_SYNC_BATCHNORM=0 turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class GlobalBatch:
    """The step's global batch, as the sharded dropout needs it: its row count and our rows."""

    rows: int = 0
    take: slice = field(default_factory=lambda: slice(None))


def shard_model(model: nn.Module, batch: GlobalBatch, sync_stats: bool = True) -> None:
    """Make ``model``'s BatchNorm (if ``sync_stats``) and Dropout layers global-batch aware, in
    place. The classes change, the parameters and buffers stay the same objects (so an optimiser
    made before keeps working) and the state_dict keys stay the same (so checkpoints load into the
    plain model)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d and sync_stats:
            m.__class__ = _SyncBatchNorm2d
        elif type(m) is nn.BatchNorm1d and sync_stats:
            m.__class__ = _SyncBatchNorm1d
        elif type(m) is nn.Dropout:
            m.__class__ = _ShardedDropout
            m.global_batch = batch  # type: ignore[assignment]


class _SyncStats(torch.autograd.Function):
    """Batch normalisation over the rows of every worker (training mode only)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                running_var: torch.Tensor, eps: float, momentum: float) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)
        # (count, mean, var) of each worker, combined exactly (Chan et al.) in float64.
        local = torch.cat([torch.tensor([float(n)], device=x.device, dtype=torch.float64), mean.double(), var.double()])
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        stats = torch.stack(parts)
        counts, means, vars_ = stats[:, :1], stats[:, 1 : 1 + x.shape[1]], stats[:, 1 + x.shape[1] :]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total
        g_var = (counts * (vars_ + (means - g_mean) ** 2)).sum(0) / total
        invstd = torch.rsqrt(g_var + eps).to(x.dtype)
        xhat = (x - g_mean.to(x.dtype).view(shape)) * invstd.view(shape)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(g_mean.to(x.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_((g_var * total / (total - 1).clamp(min=1)).to(x.dtype), alpha=momentum)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.total = float(total)
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:
        xhat, invstd, weight = ctx.saved_tensors
        dims = [0, *range(2, dy.dim())]
        shape = [1, -1] + [1] * (dy.dim() - 2)
        sum_dy = dy.sum(dims, dtype=torch.float64)
        sum_dy_xhat = (dy * xhat).sum(dims, dtype=torch.float64)
        # The weight and bias gradients stay this worker's own: DistributedDataParallel averages
        # them like every other parameter's. The input's gradient needs the global sums.
        both = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(both)
        g_dy, g_dy_xhat = (t.div(ctx.total).to(dy.dtype).view(shape) for t in both.split(len(sum_dy)))
        dx = (weight * invstd).view(shape) * (dy - g_dy - xhat * g_dy_xhat)
        return dx, sum_dy_xhat.to(dy.dtype), sum_dy.to(dy.dtype), None, None, None, None


def _sync_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
        return nn.modules.batchnorm._BatchNorm.forward(self, x)
    self._check_input_dim(x)
    batches = self.num_batches_tracked
    assert batches is not None  # Tandem's batch norms track running statistics
    batches.add_(1)
    momentum = self.momentum if self.momentum is not None else 1.0 / float(batches)
    return _SyncStats.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum)


class _SyncBatchNorm2d(nn.BatchNorm2d):
    forward = _sync_forward  # type: ignore[assignment]  # torch calls the argument input, not x


class _SyncBatchNorm1d(nn.BatchNorm1d):
    forward = _sync_forward  # type: ignore[assignment]


class _ShardedDropout(nn.Dropout):
    global_batch: GlobalBatch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        # The mask one worker would draw for the whole batch (as F.dropout draws it: Bernoulli
        # noise of the input's shape, divided by the keep probability), cut to our rows.
        keep = 1 - self.p
        noise = torch.empty((self.global_batch.rows, *x.shape[1:]), dtype=x.dtype, device=x.device)
        noise.bernoulli_(keep).div_(keep)
        return x * noise[self.global_batch.take]
