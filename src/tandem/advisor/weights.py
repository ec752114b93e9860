"""Weighing the objectives into one recommended placement per network.

Five objectives, each lower-is-better for a placement on a network: ``latency`` (ms), device
``energy`` (mJ), cloud ``cost`` ($ per 1,000), app ``size`` (bytes the app carries for the
placement) and ``updates`` (seconds from a new version to the model answering with it). Each is
normalised over the placements feasible on that network — 0 for the best, 1 for the worst::

    norm_o(p) = (v_o(p) − min_o) / (max_o − min_o)        (0 when every placement ties)
    score(p)  = Σ_o w_o · norm_o(p) / Σ_o w_o

and the lowest score is recommended (ties: the simpler placement, as :func:`decide` breaks them).
A value that cannot be had (no update reaches an offline device) normalises to 1 (0 when no
placement can have it). The default,
``latency=1``, recommends the fastest placement: today's recommendation. Normalising by the range
makes the weights trade shares of the spread between the best and the worst placement on that
network, whatever the units.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from tandem.advisor.placement import OBJECTIVES, Advice, Objective, Placement, Prediction
from tandem.errors import InvalidRequest

CRITERIA: tuple[str, ...] = (*OBJECTIVES, "size", "updates")
UNITS = {"latency": "ms", "energy": "mJ", "cost": "$/1000", "size": "bytes", "updates": "s"}
DEFAULT_WEIGHTS: dict[str, float] = {"latency": 1.0}
_RANK = {"device": 0, "cloud": 1, "split": 2}


def parse_weights(spec: str | None) -> dict[str, float]:
    """``latency=1,size=0.5`` → the weights of every criterion (those not named: 0), summing to 1."""
    if spec is None or not spec.strip():
        given = dict(DEFAULT_WEIGHTS)
    else:
        given = {}
        for part in spec.split(","):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or not name:
                raise InvalidRequest(f"--weights {spec!r}: write NAME=NUMBER pairs separated by commas, e.g. "
                                     "latency=1,size=0.5")
            if name not in CRITERIA:
                raise InvalidRequest(f"--weights: unknown objective {name!r}; choose from {', '.join(CRITERIA)}")
            if name in given:
                raise InvalidRequest(f"--weights: {name} is given twice")
            try:
                w = float(value)
            except ValueError:
                raise InvalidRequest(f"--weights: {name}={value.strip()!r} is not a number") from None
            if not math.isfinite(w) or w < 0:
                raise InvalidRequest(f"--weights: {name}={value.strip()} must be a finite number ≥ 0")
            given[name] = w
    total = sum(given.values())
    if total <= 0:
        raise InvalidRequest("--weights: at least one weight must be > 0")
    return {c: given.get(c, 0.0) / total for c in CRITERIA}


def format_weights(weights: Mapping[str, float]) -> str:
    return ",".join(f"{c}={weights[c]:.3g}" for c in CRITERIA if weights.get(c, 0) > 0)


def _order(name: str) -> tuple[int, str]:
    return _RANK[Placement.parse(name).kind], name


@dataclass(frozen=True)
class Scored:
    placement: str
    score: float
    values: dict[str, float | None]  # criterion → raw value (None: cannot be had)
    norms: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    network: str
    best: Scored
    runner_up: Scored | None
    device: Scored | None
    cloud: Scored | None
    best_split: Scored | None

    def to_dict(self) -> dict:
        return {"placement": self.best.placement, "score": self.best.score,
                "runner_up": self.runner_up.placement if self.runner_up else None,
                "runner_up_score": self.runner_up.score if self.runner_up else None,
                "scored": {s.placement: s.to_dict()
                           for s in (self.best, self.runner_up, self.device, self.cloud, self.best_split)
                           if s is not None}}


# criterion → (prediction → value); size and updates come from the app-size and update figures.
Valuer = Callable[[Prediction], float]


def _objective(objective: Objective, p: Prediction) -> float:
    return p.value(objective)


def score(predictions: Sequence[Prediction], weights: Mapping[str, float],
          extra: Mapping[str, Valuer]) -> list[Scored]:
    """Every feasible placement's weighted score, best first."""
    feasible = [p for p in predictions if p.feasible]
    valuers: dict[str, Valuer] = {o: functools.partial(_objective, o) for o in OBJECTIVES}
    valuers.update(extra)
    used = [c for c in CRITERIA if weights.get(c, 0) > 0]
    missing = [c for c in used if c not in valuers]
    if missing:
        raise InvalidRequest(f"no figures to weigh {', '.join(missing)} by")
    raw = {c: [valuers[c](p) for p in feasible] for c in used}
    ranges: dict[str, tuple[float, float] | None] = {}
    for c, vs in raw.items():
        finite = [v for v in vs if math.isfinite(v)]
        ranges[c] = (min(finite), max(finite)) if finite else None
    out = []
    for i, p in enumerate(feasible):
        norms, values = {}, {}
        for c in used:
            v, span = raw[c][i], ranges[c]
            if span is None:  # no placement can have it here: they tie
                norms[c] = 0.0
            elif not math.isfinite(v):
                norms[c] = 1.0
            else:
                lo, hi = span
                norms[c] = (v - lo) / (hi - lo) if hi > lo else 0.0
            values[c] = v if math.isfinite(v) else None
        total = sum(weights[c] * norms[c] for c in used) / sum(weights[c] for c in used)
        out.append(Scored(p.placement, total, values, norms))
    return sorted(out, key=lambda s: (s.score, *_order(s.placement)))


def recommend(advice: Advice, weights: Mapping[str, float], extra: Mapping[str, Valuer]) -> dict[str, Recommendation]:
    """The recommended placement per network of ``advice`` under ``weights``."""
    out = {}
    for net in advice.networks:
        ranked = score(advice.predictions[net.name], weights, extra)
        if not ranked:
            raise InvalidRequest(f"no placement is possible on {net.name}")
        by_name = {s.placement: s for s in ranked}
        splits = [s for s in ranked if s.placement.startswith("split@")]
        out[net.name] = Recommendation(net.name, ranked[0], ranked[1] if len(ranked) > 1 else None,
                                       by_name.get("device"), by_name.get("cloud"), splits[0] if splits else None)
    return out

