"""From cosine similarity to "how likely is this the same person", and when to say "no close match".

- ``Calibration``: P(same person | similarity of a photo to an identity's template), a monotone
  curve fitted by isotonic regression (scikit-learn, at export) on people the network never trained
  on, with same-person and different-person comparisons weighted equally (a 50/50 prior). Stored in
  the manifest as a grid of points; every runtime interpolates linearly between them.
- ``no_match_threshold``: the similarity below which the best match is no match, chosen for the
  gallery at hand. A stranger is compared with every identity, so a threshold set per comparison
  (1% of impostor pairs) lets almost every stranger through a gallery of thousands. Instead the
  bundle carries photos of validation people (``impostors.npz``: embeddings, never trained on),
  each is searched in the gallery as a stranger would be, and the threshold is the score that
  only ``far`` of them reach: the false-match rate of a search, for this very gallery.

numpy only: this runs on devices. Fitting needs scikit-learn (the train extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

GRID = np.round(np.linspace(-1.0, 1.0, 201), 4)


@dataclass(frozen=True)
class Calibration:
    x: tuple[float, ...]
    y: tuple[float, ...]

    def probability(self, similarity: np.ndarray | float) -> np.ndarray:
        return np.interp(np.asarray(similarity, np.float64), self.x, self.y)

    def to_json(self) -> dict:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        x, y = tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"])
        if len(x) != len(y) or len(x) < 2 or any(b < a for a, b in pairwise(x)):
            raise ValueError("a calibration needs at least two points with increasing x")
        return cls(x, y)


def fit(genuine: np.ndarray, impostor: np.ndarray) -> Calibration:
    from sklearn.isotonic import IsotonicRegression

    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    weights = np.concatenate([np.full(len(genuine), 0.5 / len(genuine)), np.full(len(impostor), 0.5 / len(impostor))])
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(scores, same, sample_weight=weights)
    y = np.round(iso.predict(GRID), 4)
    return Calibration(tuple(float(v) for v in GRID), tuple(float(v) for v in y))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def template_scores(emb: np.ndarray, labels: np.ndarray, seed: int = 0, max_enrol: int = 5,
                    impostors_per_probe: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) similarities of photos to identity templates, as the gallery scores them:
    each photo against the template (unit mean) of 1..``max_enrol`` other photos of its person, and
    against templates of other people."""
    rng = np.random.default_rng(seed)
    emb = _unit(np.asarray(emb, np.float64))
    people = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    templates = {c: _unit(emb[idx[: max_enrol]].mean(0)) for c, idx in people.items()}
    names = list(people)
    genuine, impostor = [], []
    for c, idx in people.items():
        for q in idx:
            others = idx[idx != q]
            if len(others):
                k = int(rng.integers(1, min(max_enrol, len(others)) + 1))
                t = _unit(emb[rng.choice(others, k, replace=False)].mean(0))
                genuine.append(float(emb[q] @ t))
            for o in rng.choice(len(names), min(impostors_per_probe, len(names)), replace=False):
                if names[o] != c:
                    impostor.append(float(emb[q] @ templates[names[o]]))
    return np.array(genuine), np.array(impostor)


def no_match_threshold(probes: np.ndarray, probe_names: list[str], gallery: np.ndarray, gallery_names: list[str],
                       far: float = 0.01) -> float:
    """The best-match score that only ``far`` of stranger searches reach in this gallery. Probes
    whose person is enrolled are left out (they are no strangers here)."""
    enrolled = set(gallery_names)
    keep = [i for i, n in enumerate(probe_names) if n not in enrolled]
    if not keep or len(gallery) == 0:
        return float("nan")
    best = (_unit(np.asarray(probes, np.float64)[keep]) @ np.asarray(gallery, np.float64).T).max(1)
    return float(np.quantile(best, 1 - far, method="higher"))
