"""App size and ease of updates beside latency, energy and cost: the figures, and the placement
recommended per network when a user weighs all five (tandem.advisor.weights).

:func:`tradeoffs` takes what the CLI gathered — the advice, the bundle's app sizes
(tandem.advisor.appsize), the bytes per update (tandem.advisor.updates: from the registry or the
bundle) and the server's alias-move figures — and returns a :class:`Tradeoffs`, which
tandem.advisor.report writes into advice.json (``app_size``, ``updates``, ``weights``,
``recommended``) and report.html.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from tandem.advisor.appsize import AppSize
from tandem.advisor.placement import Advice, Placement, Prediction
from tandem.advisor.updates import AliasLatency, UpdateLatency, UpdateSizes, ota_download_s, update_latency
from tandem.advisor.weights import Recommendation, Valuer, format_weights, recommend
from tandem.security.encryption import OVERHEAD


@dataclass
class Tradeoffs:
    platform: str  # the platform whose app size and updates the weights count
    size: AppSize
    updates: UpdateSizes
    latency: UpdateLatency
    weights: dict[str, float]
    recommended: dict[str, Recommendation]

    @property
    def device_variant(self) -> str:
        return self.latency.variant

    def to_dict(self) -> dict:
        return {
            "app_size": {"platform": self.platform, "device_variant": self.device_variant, **self.size.to_dict()},
            "updates": {**self.updates.to_dict(), "latency": self.latency.to_dict()},
            "weights": self.weights,
            "recommended": {n: r.to_dict() for n, r in self.recommended.items()},
        }

    def weights_text(self) -> str:
        return format_weights(self.weights)


def device_variant(size: AppSize, platform: str, available: set[str] | None = None) -> str:
    """The variant a device placement embeds on ``platform``: the one that adds the fewest bytes there
    (of those with a known runtime size, and in ``available``), else the fp32 ONNX model the latency
    was measured on."""
    known = [e for e in size.platforms.get(platform, {}).values()
             if e.total_bytes is not None and (available is None or e.variant in available)]
    return min(known, key=lambda e: (e.total_bytes, e.variant)).variant if known else "onnx-fp32"


def valuers(advice: Advice, size: AppSize, platform: str, latency: UpdateLatency) -> dict[str, Valuer]:
    """``size`` and ``updates`` of each placement on ``platform``:

    - size: device — :func:`device_variant` with its runtime and the app files; split@k — the head (an
      ONNX file) and ONNX Runtime; cloud — nothing.
    - updates: device — that variant over the air; split@k — its head over the air (whole); cloud — a
      server-side alias move.
    """
    nets = {n.name: n for n in advice.networks}
    chosen = size.platforms.get(platform, {}).get(latency.variant)
    device_bytes = (chosen.total_bytes if chosen is not None and chosen.total_bytes is not None
                    else advice.profile.fp32_file_bytes + sum(size.extras.values()))
    ort = size.runtime_bytes(platform, "onnx") or 0

    def app_bytes(p: Prediction) -> float:
        placement = Placement.parse(p.placement)
        if placement.kind == "device":
            return float(device_bytes)
        if placement.kind == "cloud":
            return 0.0
        return float(advice.profile.cut(placement.k).head_file_bytes + ort)

    def update_s(p: Prediction) -> float:
        placement = Placement.parse(p.placement)
        if placement.kind == "cloud":
            return latency.alias.expected_s
        if placement.kind == "device":
            ota = latency.ota.get(p.network)
            return math.inf if ota is None else ota.expected_s
        head = advice.profile.cut(placement.k).head_file_bytes + OVERHEAD
        return latency.check_every_s / 2 + ota_download_s(nets[p.network], [head])

    return {"size": app_bytes, "updates": update_s}


def tradeoffs(advice: Advice, size: AppSize, updates: UpdateSizes, *, platform: str, weights: dict[str, float],
              check_every_s: float, alias: AliasLatency) -> Tradeoffs:
    variant = device_variant(size, platform, set(updates.variants))
    latency = update_latency(updates, variant, advice.networks, check_every_s, alias)
    rec = recommend(advice, weights, valuers(advice, size, platform, latency))
    return Tradeoffs(platform, size, updates, latency, weights, rec)


def measure_load_ms(model: Path, repeats: int = 3) -> float:
    """Median time to open an ONNX Runtime session of ``model`` here (what a server does before warming a version up)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)
