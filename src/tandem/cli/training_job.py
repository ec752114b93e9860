"""`tandem run-training-job` (hidden): what a managed training's Ray Job runs on the cluster. The server
submits it (server/trainings.py, POST /v1/trainings); nobody types it.

It fetches the dataset archive from the artifact store by its sha256, unpacks it under the same rules the
server checked it by (data/archive.py), trains as `tandem train --data DIR` does (the plain trainer, or Ray
Train on the cluster with --workers > 1), exports the ONNX bundle, and pushes it into the registry with the
alias in one transaction. Its settings are the environment Ray gives it: the server's registry
(TANDEM_HOME, TANDEM_DATABASE_URL, TANDEM_ARTIFACTS and S3's, passed with the job) and the cluster's own
TANDEM_RAY_*. Everything it has to say goes to stdout as ``tandem-event:`` lines (protocol/training.py),
which Ray keeps as the job's log and the server streams; a failure ends with a ``failed`` event saying why
and a non-zero exit, and leaves nothing in the registry (its temporary folder is removed, even when Ray
stops it: SIGTERM unwinds like Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from tandem.cli.output import get_settings
from tandem.errors import TandemError

STEP_EVERY_S = 0.5  # step events at most this often: the log stays small, the bar still moves


class _Stopped(BaseException):
    """Ray stopped the job (SIGTERM): unwind, so that temporary files go and open transactions roll back."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped


def emit(kind: str, **data: Any) -> None:
    from tandem.protocol.training import event_line

    print(event_line(kind, **data), flush=True)


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN (a run without validation has no validation accuracy): None instead."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


class JobProgress:
    """The trainer's progress (training/progress.py's listener) as event lines."""

    def __init__(self) -> None:
        self.last = 0.0

    def started(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        emit("start", epochs=epochs, steps_per_epoch=steps_per_epoch, start_epoch=start_epoch)

    def step(self, epoch: int, batch: int, loss: float, acc: float) -> None:
        now = time.monotonic()
        if now - self.last >= STEP_EVERY_S:
            self.last = now
            emit("step", epoch=epoch, batch=batch, loss=_finite({"v": loss})["v"], acc=_finite({"v": acc})["v"])

    def epoch_done(self, epoch: int, row: dict[str, Any]) -> None:
        emit("epoch", epoch=epoch, row=_finite(row))


def run_training_job(
    training_id: Annotated[str, typer.Option("--id", help="The training's id (its Ray job's submission id).")],
    dataset: Annotated[str, typer.Option(help="sha256 of the dataset archive in the artifact store.")],
    spec: Annotated[str, typer.Option(help="The training spec, JSON (protocol/training.py).")],
    max_bytes: Annotated[int, typer.Option(help="The most bytes the archive may unpack to.")] = 4 << 30,
    max_entries: Annotated[int, typer.Option(help="The most entries the archive may hold.")] = 200_000,
) -> None:
    """What a managed training's Ray Job runs (POST /v1/trainings submits it): train, export, push."""
    signal.signal(signal.SIGTERM, _stop)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    t0 = time.perf_counter()
    try:
        version = _run(training_id, dataset, spec, max_bytes, max_entries)
    except _Stopped:
        emit("failed", error="stopped: the training was cancelled (DELETE /v1/trainings/ID); nothing was pushed")
        raise typer.Exit(143) from None
    except TandemError as e:
        emit("failed", error=str(e))
        raise typer.Exit(e.exit_code) from None
    except Exception as e:  # a bug, or a library's own error: the traceback goes to the log, the reason to the client
        traceback.print_exc()
        emit("failed", error=f"{type(e).__name__}: {e}")
        raise typer.Exit(1) from None
    emit("done", version=version, seconds=round(time.perf_counter() - t0, 2))


def _run(training_id: str, dataset: str, spec_json: str, max_bytes: int, max_entries: int) -> int:
    from tandem.data.archive import Limits, extract_dataset
    from tandem.export.exporter import ExportOptions, export_run
    from tandem.protocol.training import TrainingSpec
    from tandem.registry.registry import Registry
    from tandem.training.run import TrainConfig

    spec = TrainingSpec.from_json(json.loads(spec_json))
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix=f"{training_id}-") as tmp, Registry.open(settings.registry) as reg:
        work = Path(tmp)
        archive = reg.store.path(dataset)  # an S3 store fetches it into its cache first
        summary = extract_dataset(archive, work / "data", Limits(max_bytes, max_entries))
        emit("dataset", **summary.to_json())
        cfg = TrainConfig(data=str(work / "data"), out=work / "run", name=spec.name, min_faces=1, subset=spec.subset,
                          epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, device=spec.device,
                          seed=spec.seed, val_fraction=spec.val_fraction, stem_stride=spec.stem_stride)
        cfg.validate()
        if spec.workers == 1:
            from tandem.training.trainer import train

            result = train(cfg, show_progress=False, listener=JobProgress())
        else:
            from tandem.training.distributed import RayOptions, train_on_ray

            # Inside a Ray job RAY_ADDRESS names the cluster the job runs on.
            result = train_on_ray(cfg, RayOptions(spec.workers, os.environ.get("RAY_ADDRESS"), spec.gpus), settings.ray,
                                  None, show_progress=False, s3=settings.registry, listener=JobProgress())
        emit("trained", epochs=result.epochs, best_epoch=result.best_epoch, best_val_top1=_finite(
            {"v": result.best_val_acc})["v"], train_images=result.train_images, classes=result.classes,
            seconds=round(result.seconds, 2))
        emit("exporting")
        bundle = export_run(cfg.out, work / "bundle", ExportOptions(name=spec.name, formats="onnx"))
        emit("pushing")
        v = reg.push(bundle.root, pushed_by=f"training {training_id}", alias=spec.alias)
        emit("pushed", name=v.name, version=v.version, alias=spec.alias, size=v.size,
             manifest_sha256=v.manifest_sha256)
        return v.version


def register(app: typer.Typer) -> None:
    app.command("run-training-job", hidden=True)(run_training_job)
