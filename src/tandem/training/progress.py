"""The training progress bar: epoch, loss, accuracy, validation accuracy and ETA; and what else may
listen to the same progress (a managed training job writes it to its log, `tandem train --remote`
draws this bar from it)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressListener(Protocol):
    """Told what the bar is told: the run's shape once, then each step and each finished epoch."""

    def started(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None: ...
    def step(self, epoch: int, batch: int, loss: float, acc: float) -> None: ...
    def epoch_done(self, epoch: int, row: dict[str, Any]) -> None: ...


class TrainProgress:
    def __init__(self, epochs: int, steps_per_epoch: int, start_epoch: int, enabled: bool = True,
                 listener: ProgressListener | None = None):
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.start_epoch = start_epoch
        self.enabled = enabled
        self.listener = listener
        self.val = "—"
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.3f}  val {task.fields[val]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self._task = self._progress.add_task(
            "train", total=epochs * steps_per_epoch, completed=start_epoch * steps_per_epoch,
            epoch=start_epoch + 1, epochs=epochs, loss=0.0, acc=0.0, val=self.val,
        )

    def __enter__(self) -> TrainProgress:
        self._progress.start()
        if self.listener is not None:
            self.listener.started(self.epochs, self.steps, self.start_epoch)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def step(self, epoch: int, batch: int, loss: float, acc: float) -> None:
        """Batch ``batch`` of epoch ``epoch`` (both 0-based) is done: a Ray Train run reports only
        some of its steps, so the bar goes to where the step says, not one further."""
        self._progress.update(self._task, completed=epoch * self.steps + batch + 1, epoch=epoch + 1, loss=loss, acc=acc)
        if self.listener is not None:
            self.listener.step(epoch, batch, loss, acc)

    def epoch_done(self, epoch: int, row: dict) -> None:
        if self.listener is not None:
            self.listener.epoch_done(epoch, row)
        self.val = f"{row['val_acc']:.3f}" if row["val_acc"] == row["val_acc"] else "—"
        # The epoch's train metrics over every batch (and, under Ray, every worker), not the last step's.
        self._progress.update(self._task, val=self.val, loss=row["train_loss"], acc=row["train_acc"])
        if self.enabled:
            self._progress.console.print(
                f"epoch {epoch + 1}/{self.epochs}: loss {row['train_loss']:.3f}  acc {row['train_acc']:.3f}  "
                f"val loss {row['val_loss']:.3f}  val acc {self.val}  ({row['seconds']:.1f}s)"
            )
