"""Accuracy of a classifier on numpy arrays: top-k and balanced (shared by export and the benchmarks)."""

from __future__ import annotations

import numpy as np


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def balanced_accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    if len(labels) == 0:
        return float("nan")
    recalls = [float((preds[labels == c] == c).mean()) for c in np.unique(labels)]
    return float(np.mean(recalls))
