"""Deterministic stratified subsets and train/val/test splits, by seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem.errors import DataError


@dataclass(frozen=True)
class Split:
    train: list[int]
    val: list[int]
    test: list[int]

    def as_dict(self) -> dict[str, list[int]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _by_class(labels: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    return groups


def stratified_subset(labels: list[int], fraction: float, seed: int, min_per_class: int = 3) -> list[int]:
    """Keep ``fraction`` of each class (at least ``min_per_class`` where it has them), sorted."""
    if not 0 < fraction <= 1:
        raise DataError(f"--subset must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for _, idx in sorted(_by_class(labels).items()):
        n = min(len(idx), max(min_per_class, round(len(idx) * fraction)))
        keep.extend(rng.permutation(idx)[:n].tolist())
    return sorted(keep)


def stratified_split(labels: list[int], val: float = 0.1, test: float = 0.2, seed: int = 0) -> Split:
    """Split each class by the same fractions; every class keeps at least one training image.

    Classes too small for all three parts give up validation first, then test.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions val={val}, test={test} must be >= 0 and sum to less than 1")
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for _, idx in sorted(_by_class(labels).items()):
        perm = rng.permutation(idx).tolist()
        n = len(perm)
        n_test = round(n * test) if test else 0
        n_val = round(n * val) if val else 0
        if test and n >= 2:
            n_test = max(n_test, 1)
        if val and n >= 3:
            n_val = max(n_val, 1)
        while n - n_test - n_val < 1:
            if n_val:
                n_val -= 1
            else:
                n_test -= 1
        out["test"].extend(perm[:n_test])
        out["val"].extend(perm[n_test : n_test + n_val])
        out["train"].extend(perm[n_test + n_val :])
    return Split(*(sorted(out[k]) for k in ("train", "val", "test")))


def identity_split(labels: list[int], val: float = 0.1, seed: int = 0, test_classes: set[int] | None = None,
                   min_val_images: int = 2) -> Split:
    """Split by identity: no person's images are in two parts (open-set training and evaluation).

    ``test_classes`` (e.g. the people of LFW's last pair folds) make the test part; ``val`` of the
    remaining people with at least ``min_val_images`` images make validation; the rest train.
    """
    if not 0 <= val < 1:
        raise DataError(f"validation fraction {val} must be in [0, 1)")
    groups = _by_class(labels)
    test_classes = test_classes or set()
    eligible = sorted(c for c, idx in groups.items() if c not in test_classes and len(idx) >= min_val_images)
    rng = np.random.default_rng(seed)
    n_val = round(len(eligible) * val)
    if val and n_val == 0 and len(eligible) >= 2:
        n_val = 1
    val_classes = set(rng.permutation(eligible)[:n_val].tolist())
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c, idx in groups.items():
        part = "test" if c in test_classes else "val" if c in val_classes else "train"
        out[part].extend(idx)
    if not out["train"]:
        raise DataError("no identity is left for training after the validation and test people; add people")
    return Split(*(sorted(out[k]) for k in ("train", "val", "test")))
