"""How well an embedding tells people apart: verification (same person or not, LFW-style folds)
and identification (who, out of a gallery). numpy only; the bench and training validation share it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (score ≥ t means same) with the highest accuracy on these pairs."""
    order = np.argsort(scores)
    s, y = scores[order], same[order].astype(np.int64)
    # Threshold just above s[k]: pairs 0..k say different, k+1.. say same.
    correct_if_cut = np.concatenate([[0], np.cumsum(1 - y)]) + (y.sum() - np.concatenate([[0], np.cumsum(y)]))
    k = int(np.argmax(correct_if_cut))
    if k == 0:
        return float(s[0]) - 1e-6
    if k == len(s):
        return float(s[-1]) + 1e-6
    return float((s[k - 1] + s[k]) / 2)


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (probability a same pair outscores a different pair; ties half)."""
    pos, neg = scores[same], scores[~same]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = _ranks(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def threshold_at_far(impostor_scores: np.ndarray, far: float) -> float:
    """The lowest threshold that at most ``far`` of impostor scores reach (score ≥ t is a match)."""
    s = np.sort(np.asarray(impostor_scores, np.float64))
    if len(s) == 0:
        return float("inf")
    k = int(np.floor(len(s) * (1 - far)))
    return float(s[min(k, len(s) - 1)]) + 1e-9 if k < len(s) else float(s[-1]) + 1e-9


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float = 0.01) -> float:
    t = threshold_at_far(scores[~same], far)
    return float((scores[same] >= t).mean()) if same.any() else float("nan")


@dataclass(frozen=True)
class Verification:
    accuracy: float
    auc: float
    tar_at_far1: float
    pairs: int


def verify_folds(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Verification:
    """LFW's protocol: each fold's accuracy at the threshold best on the other folds given, averaged."""
    same = same.astype(bool)
    accs = []
    for f in np.unique(folds):
        test, rest = folds == f, folds != f
        t = best_threshold(scores[rest], same[rest]) if rest.any() else best_threshold(scores[test], same[test])
        accs.append(float(((scores[test] >= t) == same[test]).mean()))
    return Verification(float(np.mean(accs)), auc(scores, same), tar_at_far(scores, same, 0.01), len(scores))


def templates(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One unit mean embedding per label: (labels in order, L×D)."""
    emb = unit(emb)
    names = np.unique(labels)
    return names, unit(np.stack([emb[labels == n].mean(0) for n in names]))


def identify(gallery: np.ndarray, gallery_labels: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best gallery label, best score) for each probe, by cosine similarity with the templates."""
    scores = unit(probes) @ gallery.T
    best = scores.argmax(1)
    return gallery_labels[best], scores[np.arange(len(probes)), best]
