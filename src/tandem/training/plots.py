"""Training-curve and confusion-matrix PNGs, saved next to the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tandem import atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BEST_LABEL = "best epoch"  # the label of the marker on the curves (tests find it by this)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def best_epoch_of(history: list[dict]) -> int | None:
    """The epoch a run keeps (best.pt) when its checkpoint does not say: the last of the highest
    validation accuracy, as the trainers choose it; None without validation."""
    scored = [(h["val_acc"], h["epoch"]) for h in history if not math.isnan(h.get("val_acc", math.nan))]
    return max(scored)[1] if scored else None


def curves_figure(history: list[dict], best_epoch: int | None = None) -> Figure:
    """Loss and accuracy per epoch, the best epoch (``best_epoch``, default: ``best_epoch_of``) marked
    with a dotted line on both and a star on its validation accuracy."""
    plt = _pyplot()
    best = best_epoch if best_epoch is not None else best_epoch_of(history)
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train")
    ax2.plot(epochs, [h["val_acc"] for h in history], "o-", label="validation")
    ax2.set(xlabel="epoch", ylabel="top-1 accuracy", title="Accuracy", ylim=(0, 1.02))
    row = next((h for h in history if h["epoch"] == best), None)
    if row is not None:
        for ax in (ax1, ax2):
            ax.axvline(best, color="0.35", linestyle=":", linewidth=1.5, label=f"{BEST_LABEL} ({best}, kept)")
        if not math.isnan(row.get("val_acc", math.nan)):
            ax2.plot([best], [row["val_acc"]], "*", color="tab:red", markersize=14, zorder=3,
                     label=f"validation {row['val_acc']:.3f} at epoch {best}")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> None:
    _save(curves_figure(history, best_epoch), path)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def confusion_figure(cm: np.ndarray, classes: list[str], title: str) -> Figure:
    """Each row (a true class) as shares of its photos, with a colour bar that reads the shades."""
    plt = _pyplot()
    n = len(classes)
    size = min(4 + 0.22 * n, 22)
    fig, ax = plt.subplots(figsize=(size + 1, size))  # +1: the colour bar
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's photos")
    ticks = np.arange(n)
    short = [c.replace("_", " ")[:22] for c in classes]
    ax.set_xticks(ticks, short, rotation=90, fontsize=7)
    ax.set_yticks(ticks, short, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    _save(confusion_figure(cm, classes, title), path)


def _save(fig: Figure, path: Path) -> None:
    with atomic.temp_path_for(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)
