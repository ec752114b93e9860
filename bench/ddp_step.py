"""Where a data-parallel training step's time goes on this machine (issue 20: two Ray nodes trained slower than one).

    .venv/bin/python bench/ddp_step.py [--size 112] [--steps 12]

The network `tandem train --stem-stride 2` trains (tandem.models.mobilenet, 41 BatchNorm layers), one step of a
32-photo global batch: one process on one core, against two processes on a core each (pinned) over
torch.distributed's gloo on loopback, as two Ray Train workers run it, with 16 photos each:

- ``neither``: no communication at all (what the compute alone costs at half the batch);
- ``ddp``: DistributedDataParallel's gradient all-reduce;
- ``ddp_sync_bn``: that and training/sync.py's exact BatchNorm over the global batch (two collectives per
  BatchNorm layer and step: forward statistics, backward sums), what `tandem train --workers N` does by default
  (TANDEM_RAY_SYNC_BATCHNORM=0 turns it off).

Median step time after two warm-up steps. Writes bench/results/ddp_step.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.nn.parallel import DistributedDataParallel

from tandem import atomic
from tandem.models.mobilenet import EmbeddingNet, NetConfig
from tandem.testing.processes import free_port
from tandem.training.sync import GlobalBatch, shard_model

RESULTS = Path(__file__).resolve().parent / "results"
GLOBAL_BATCH = 32


def _steps(rank: int, world: int, mode: str, size: int, steps: int, port: int, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {rank % (os.cpu_count() or 1)})
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = EmbeddingNet(NetConfig(num_classes=16, stem_stride=2))
    if world > 1:
        shard_model(model, GlobalBatch(rows=GLOBAL_BATCH, take=slice(rank, None, world)), mode == "ddp_sync_bn")
    net = DistributedDataParallel(model) if mode != "neither" and world > 1 else model
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.rand(GLOBAL_BATCH // world, 3, size, size)
    y = torch.randint(0, 16, (GLOBAL_BATCH // world,))
    took = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        took.append(time.perf_counter() - t0)
    if rank == 0:
        out.put(statistics.median(took[2:]))
    if world > 1:
        dist.destroy_process_group()


def step_ms(world: int, mode: str, size: int, steps: int) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_steps, args=(r, world, mode, size, steps, port, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return round(out.get() * 1e3, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=112, help="photo side in pixels (the crop `tandem train` uses)")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench/ddp_step.py pins two processes to a core each: it needs 2 cores")
    one = step_ms(1, "neither", args.size, args.steps)
    two = {mode: step_ms(2, mode, args.size, args.steps) for mode in ("neither", "ddp", "ddp_sync_bn")}
    bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             for m in EmbeddingNet(NetConfig(num_classes=16, stem_stride=2)).modules())
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "global_batch": GLOBAL_BATCH, "size": args.size, "batchnorm_layers": bn,
              "step_ms": {"1_process": one, **{f"2_processes_{m}": v for m, v in two.items()}},
              "speedup_2_vs_1": {m: round(one / v, 2) for m, v in two.items()},
              "sync_bn_ms_per_collective": round((two["ddp_sync_bn"] - two["ddp"]) / (2 * bn), 2)}
    RESULTS.mkdir(exist_ok=True)
    atomic.write_text(RESULTS / "ddp_step.json", json.dumps(result, indent=2) + "\n")
    table = Table(title=f"one training step, global batch {GLOBAL_BATCH}, {args.size}px, a core per process")
    for col in ("setup", "ms a step", "speed-up vs 1 process"):
        table.add_column(col, justify="left" if col == "setup" else "right")
    table.add_row("1 process", f"{one}", "1.00")
    for mode, v in two.items():
        table.add_row(f"2 processes, {mode}", f"{v}", f"{result['speedup_2_vs_1'][mode]}")
    Console().print(table)
    Console().print(f"exact BatchNorm: {bn} layers, 2 collectives each a step, "
                    f"~{result['sync_bn_ms_per_collective']} ms a collective  →  {RESULTS / 'ddp_step.json'}")


if __name__ == "__main__":
    main()
