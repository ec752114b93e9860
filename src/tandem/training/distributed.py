"""`tandem train --workers N`: the same training, data parallel under Ray Train's TorchTrainer.

The driver (this process) prepares the run folder exactly as the local trainer does, puts the
decoded images in Ray's object store once, and starts N workers (ray_worker.py). Each epoch rank 0
reports its metrics and a checkpoint to Ray Train, which persists it under ``<out>/ray`` (or below
TANDEM_RAY_STORAGE: an S3 prefix or a folder every node of a cluster reaches) and, through
RunFolderSync on the controller (pinned to this node), puts it into the run folder as
checkpoint.pt / best.pt / history.json (curves.png when the run ends). So the result is an ordinary run folder that
`tandem export` reads and `tandem train --resume` (with or without --workers) continues.

Ray's own checkpoints serve restarts within a run (FailureConfig: a lost worker restarts the group
from the last report); the run folder is what a later --resume starts from, so ``<out>/ray`` is
cleared at the start and removed after a successful run.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from tandem import atomic
from tandem.errors import ClusterError, ConfigError
from tandem.ray_cluster import cluster_cpus, connected, local_cpus, train_storage
from tandem.settings import RaySettings, RegistrySettings
from tandem.training import checkpoint
from tandem.training.loop import batches
from tandem.training.progress import ProgressListener, TrainProgress
from tandem.training.ray_worker import train_worker
from tandem.training.run import HISTORY, TrainConfig, read_json, write_json
from tandem.training.trainer import (
    TrainResult,
    finish,
    load_run_pixels,
    net_config,
    open_run,
    write_history,
    write_run_files,
)

log = logging.getLogger(__name__)
RAY_DIR = "ray"  # Ray Train's storage inside the run folder while a run is in flight (TANDEM_RAY_STORAGE unset)
RUN_NAME = "train"
POLL_S = 0.5


@dataclass(frozen=True)
class RayOptions:
    workers: int
    address: str | None = None  # None: TANDEM_RAY_ADDRESS, else a local instance sized to this machine
    gpus_per_worker: float = 0.0

    def validate(self, cfg: TrainConfig) -> None:
        problems = []
        if self.workers < 1:
            problems.append(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            problems.append(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if cfg.batch_size < 2 * self.workers:
            problems.append(f"--batch-size {cfg.batch_size} is too small for {self.workers} workers: each needs "
                            f"at least 2 images of every batch (BatchNorm), so use --batch-size {2 * self.workers} or more")
        if problems:
            raise ConfigError("; ".join(problems))


class ProgressBoard:
    """A mailbox actor: workers and the controller post progress, the driver collects it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def push(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def drain(self) -> list[dict[str, Any]]:
        out, self.messages = self.messages, []
        return out


class RunFolderSync(ray.train.UserCallback):
    """Runs on the Ray Train controller, which Ray places on the driver's node: after every report
    with a checkpoint, copy it into the run folder and post the epoch's metrics to the driver."""

    def __init__(self, out: str, board: Any) -> None:
        self.out = out
        self.board = board

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is None:
            return
        with checkpoint.as_directory() as d:
            copy_checkpoint(Path(d), Path(self.out))
        self.board.push.remote({"row": metrics[0]})


def copy_checkpoint(src: Path, out: Path, plot: bool = False) -> None:
    """A reported checkpoint folder into the run folder: best.pt before checkpoint.pt, as the local
    trainer writes them, so checkpoint.pt never names a best epoch that best.pt lacks. The files are
    hard links where Ray's storage shares the run folder's filesystem (no copy). Drawing curves.png
    (``plot``) is left to the end of the run: done here it would take a core from the next epoch."""
    for name in (checkpoint.BEST, checkpoint.LAST):
        if (src / name).exists():
            with atomic.temp_path_for(out / name) as tmp:
                try:
                    tmp.unlink()
                    os.link(src / name, tmp)
                except OSError:
                    shutil.copyfile(src / name, tmp)
    if (src / HISTORY).exists():
        history = read_json(src / HISTORY)
        if plot:
            write_history(out, history)
        else:
            write_json(out / HISTORY, history)


class _BarFeed:
    """Moves what the board collected onto the driver's progress bar, from a thread of its own
    while ``fit()`` blocks the main thread (which keeps Ray Train's Ctrl-C handling). Without a bar
    to show (--json, --no-progress) it does nothing: polling would only take CPU from training."""

    def __init__(self, board: Any, enabled: bool) -> None:
        self.board, self.enabled = board, enabled
        self.bar: TrainProgress | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tandem-ray-progress", daemon=True)

    def onto(self, bar: TrainProgress) -> _BarFeed:
        self.bar = bar
        return self

    def __enter__(self) -> _BarFeed:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join(10)
            self.drain()  # what arrived after the last poll

    def _run(self) -> None:
        while not self.stop.wait(POLL_S):
            try:
                self.drain()
            except ray.exceptions.RayError as e:  # the bar is cosmetic: never let it end the run
                log.debug("progress board: %s", e)

    def drain(self) -> None:
        assert self.bar is not None
        for message in ray.get(self.board.drain.remote()):
            if "step" in message:
                self.bar.step(*message["step"])
            elif "row" in message:
                row = message["row"]
                self.bar.epoch_done(row["epoch"] - 1, row)


def train_on_ray(cfg: TrainConfig, opts: RayOptions, settings: RaySettings, data_home: Path | None, resume: bool = False,
                 show_progress: bool = True, s3: RegistrySettings | None = None,
                 listener: ProgressListener | None = None) -> TrainResult:
    """``s3``: the artifact store's endpoint and credentials, for TANDEM_RAY_STORAGE=s3://…; ``listener``: told
    the progress the bar shows (training/progress.py), with or without the bar."""
    t_start = time.perf_counter()
    follow = show_progress or listener is not None  # the workers post their steps, the driver polls them
    cfg.validate()
    opts.validate(cfg)
    gpus = opts.gpus_per_worker or (1.0 if cfg.device == "cuda" else 0.0)
    if gpus and cfg.device != "cuda":
        cfg.device = "cuda"  # --gpus-per-worker implies training on them
    torch.set_num_threads(local_cpus())  # for the driver's own part: the confusion matrix at the end
    data, state = open_run(cfg, resume, data_home=data_home)
    pixels = load_run_pixels(cfg, data)
    net_cfg = net_config(cfg, data, pixels, state)
    write_run_files(cfg, data)
    best = checkpoint.load(cfg.out / checkpoint.BEST) if state is not None and (cfg.out / checkpoint.BEST).exists() else None
    storage = train_storage(settings.ray_storage, cfg.out.resolve() / RAY_DIR, cfg.out.resolve().name,
                            s3 or RegistrySettings())
    # The run folder is the truth a --resume starts from; an older Ray run there must not be restored instead.
    storage.remove()

    start = 0 if state is None else state["epoch"]
    last = cfg.epochs if cfg.stop_after is None else max(start, cfg.stop_after)
    steps = len(batches(torch.arange(len(pixels.train_x)), cfg.batch_size, 2 * opts.workers))
    if start < last:
        with connected(opts.address, settings):
            if settings.ray_storage is None and sum(1 for n in ray.nodes() if n.get("Alive")) > 1:
                log.warning("Ray Train keeps its checkpoints in %s while the run goes: on a cluster of several "
                            "machines that must be storage every node mounts, or set TANDEM_RAY_STORAGE=s3://…",
                            storage.path)
            cpus, threads = _worker_cpus(opts.workers, gpus, settings)
            board = ray.remote(num_cpus=0)(ProgressBoard).remote()
            trainer = TorchTrainer(
                train_worker,
                train_loop_config={
                    "cfg": cfg, "net": net_cfg.to_dict(), "classes": data.classes, "threads": threads,
                    "use_gpu": gpus > 0, "sync_batchnorm": settings.ray_sync_batchnorm, "progress": follow,
                    "board": board, "pixels": ray.put(pixels), "state": ray.put(state),
                    "best": ray.put(best),
                },
                scaling_config=ray.train.ScalingConfig(
                    num_workers=opts.workers, use_gpu=gpus > 0,
                    resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})},
                ),
                run_config=ray.train.RunConfig(
                    name=RUN_NAME, storage_path=storage.path, storage_filesystem=storage.filesystem,
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                    failure_config=ray.train.FailureConfig(max_failures=settings.ray_max_failures),
                    # Ray Train v2 (ray.train.RunConfig at run time) takes UserCallbacks; the static type is v1's.
                    callbacks=[RunFolderSync(str(cfg.out.resolve()), board)],  # type: ignore[list-item]
                ),
            )
            feed = _BarFeed(board, follow)
            with TrainProgress(cfg.epochs, steps, start, enabled=show_progress, listener=listener) as bar, \
                    feed.onto(bar):
                try:
                    result = trainer.fit()
                except ray.train.TrainingFailedError as e:
                    raise ClusterError(f"training on Ray failed: {_root_cause(e)}; the run folder {cfg.out} holds "
                                       "the last finished epoch: continue with --resume") from e
            if result.checkpoint is not None:  # the callback did this already where it shares our disk
                with result.checkpoint.as_directory() as d:
                    copy_checkpoint(Path(d), cfg.out, plot=True)
        storage.remove()
    return finish(cfg, data, pixels, torch.device("cpu"), t_start)


def _worker_cpus(workers: int, gpus: float, settings: RaySettings) -> tuple[float, int]:
    """(CPUs each worker reserves, its torch threads): the cluster's CPUs shared out unless set."""
    total = cluster_cpus()
    cpus = settings.ray_cpus_per_worker or math.floor(100 * total / workers) / 100
    if cpus <= 0 or cpus * workers > total + 1e-9:
        raise ClusterError(f"{workers} workers × {cpus:g} CPUs do not fit the Ray cluster's {total:g} CPUs; "
                           "use fewer --workers or set TANDEM_RAY_CPUS_PER_WORKER lower")
    if gpus:
        have = float(ray.cluster_resources().get("GPU", 0.0))
        if gpus * workers > have:
            raise ClusterError(f"{workers} workers × {gpus:g} GPUs asked for, but the Ray cluster has {have:g} GPUs")
    return cpus, max(1, int(cpus))


def _root_cause(e: BaseException) -> str:
    failures = getattr(e, "worker_failures", None)
    if failures:
        rank, err = sorted(failures.items())[0]
        return f"worker {rank}: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    return f"{type(e).__name__}: {e}"
