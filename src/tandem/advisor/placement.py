"""Where to run the model: on the device, in the cloud, or split at cut k — predicted, and chosen.

For a placement on a network (docs/advisor.md has the derivation)::

    device:   latency = whole · s_dev
    cloud:    latency = transfer(pixels ↑, outputs ↓) + overhead + whole · s_srv
    split@k:  latency = head_k · s_dev [+ int8 encode · s_dev] + transfer(tensor_k ↑, outputs ↓)
                        + overhead + tail_k · s_srv [+ int8 decode · s_srv]

where the times are this machine's (a :class:`ModelProfile`), ``s_dev``/``s_srv`` the device's and
the server's speed factors and ``transfer`` the network model of tandem.advisor.networks. Device
energy is the device's compute time at its power plus the radio (tandem.advisor.energy); cloud
cost is the server's share of instance time plus bandwidth (tandem.advisor.cost).

:func:`predict` is pure: the device SDK's ``auto`` policy calls it with live numbers (a
``NetworkProfile.live(...)`` and a ``DeviceProfile.calibrated(...)``) and :func:`choose` picks the
best of the placements it can actually run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from tandem.advisor.cost import CloudPrices, bandwidth_usd_per_1000, compute_usd_per_1000
from tandem.advisor.devices import DEVICES, DeviceProfile
from tandem.advisor.energy import EnergyModel, compute_mj, radio_mj
from tandem.advisor.networks import NetworkProfile, transfer
from tandem.advisor.profile import ModelProfile
from tandem.errors import InvalidRequest

Kind = Literal["device", "cloud", "split"]
Objective = Literal["latency", "energy", "cost"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "energy", "cost")
UNITS = {"latency": "ms", "energy": "mJ", "cost": "$/1000"}
# Bytes besides the tensors in one OIP v2 binary request / response: HTTP/1.1 request or status
# line and headers, and the JSON header naming the tensors (measured on Tandem's server: ~350/~250).
REQUEST_OVERHEAD_BYTES = 400
RESPONSE_OVERHEAD_BYTES = 300
# Per request on the server besides the model (HTTP, parsing, batching queue) when not measured:
# Tandem's server on this 2-core machine (FACTS.md: 16 ms p50 for JSON, of which ~12 ms parsing;
# binary tensors skip the parsing).
DEFAULT_OVERHEAD_MS = 2.0
_NAME = re.compile(r"^(device|cloud|split@(\d+)(\+int8)?)$")


@dataclass(frozen=True)
class Placement:
    kind: Kind
    k: int = 0  # split: compute nodes on the device
    int8: bool = False  # split: the tensor crosses int8-encoded

    @property
    def name(self) -> str:
        if self.kind != "split":
            return self.kind
        return f"split@{self.k}" + ("+int8" if self.int8 else "")

    @classmethod
    def split(cls, k: int, int8: bool = False) -> Placement:
        return cls("split", k, int8)

    @classmethod
    def parse(cls, name: str) -> Placement:
        m = _NAME.match(name.strip())
        if m is None:
            raise InvalidRequest(f"placement {name!r}: use 'device', 'cloud', 'split@K' or 'split@K+int8'")
        if m.group(2) is None:
            return cls(m.group(1))  # type: ignore[arg-type]
        return cls.split(int(m.group(2)), m.group(3) is not None)

    def __str__(self) -> str:
        return self.name


DEVICE = Placement("device")
CLOUD = Placement("cloud")


def placements(profile: ModelProfile, int8_transfer: bool = True) -> list[Placement]:
    """device, every candidate split (and its int8 variant), cloud: in the order the device's share falls."""
    out = [DEVICE]
    for c in sorted(profile.cuts, key=lambda c: -c.k):
        out.append(Placement.split(c.k))
        if int8_transfer:
            out.append(Placement.split(c.k, True))
    out.append(CLOUD)
    return out


@dataclass(frozen=True)
class ServerProfile:
    speed_factor: float = 1.0  # server time ÷ this machine's time
    overhead_ms: float = DEFAULT_OVERHEAD_MS
    source: str = "estimated: a server as fast as this machine, 2 ms per request besides the model"

    def __post_init__(self) -> None:
        if not self.speed_factor > 0 or self.overhead_ms < 0:
            raise InvalidRequest("server speed factor must be > 0 and overhead ≥ 0 ms")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_SERVER = ServerProfile()
DEFAULT_ENERGY = EnergyModel()
DEFAULT_PRICES = CloudPrices()


@dataclass(frozen=True)
class Prediction:
    placement: str
    network: str
    feasible: bool
    latency_ms: float
    device_ms: float  # compute on the device (int8 encoding included)
    server_ms: float  # overhead + compute on the server (int8 decoding included)
    network_ms: float  # rtt + upload + download + loss penalty
    rtt_ms: float
    upload_ms: float
    download_ms: float
    loss_ms: float
    up_bytes: int
    down_bytes: int
    energy_mj: float  # on the device: compute + radio
    compute_mj: float
    radio_mj: float
    cost_usd_per_1000: float  # cloud: compute + bandwidth
    compute_usd_per_1000: float
    bandwidth_usd_per_1000: float
    app_bytes: int  # model bytes the app carries for this placement

    def value(self, objective: Objective) -> float:
        return {"latency": self.latency_ms, "energy": self.energy_mj, "cost": self.cost_usd_per_1000}[objective]

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _infeasible(placement: Placement, network: NetworkProfile, app_bytes: int) -> Prediction:
    inf = math.inf
    return Prediction(placement.name, network.name, False, inf, inf, inf, inf, inf, inf, inf, inf, 0, 0,
                      inf, inf, inf, inf, inf, inf, app_bytes)


def predict(
    placement: Placement,
    network: NetworkProfile,
    profile: ModelProfile,
    *,
    device: DeviceProfile = DEVICES["this-machine"],
    server: ServerProfile = DEFAULT_SERVER,
    energy: EnergyModel = DEFAULT_ENERGY,
    prices: CloudPrices = DEFAULT_PRICES,
) -> Prediction:
    """Latency, device energy and cloud cost of one request with ``placement`` on ``network``."""
    if placement.kind == "device":
        dev_ms = profile.whole_ms * device.speed_factor
        e = compute_mj(dev_ms, device.watts)
        return Prediction(placement.name, network.name, True, dev_ms, dev_ms, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0,
                          e, e, 0.0, 0.0, 0.0, 0.0, profile.fp32_file_bytes)
    if placement.kind == "cloud":
        dev_ms, srv_part_ms, sent, app = 0.0, profile.whole_ms, profile.input_bytes, 0
        codec_dev = codec_srv = 0.0
    else:
        cut = profile.cut(placement.k)
        dev_ms, srv_part_ms, app = cut.head_ms, cut.tail_ms, cut.head_file_bytes
        sent = cut.int8_bytes if placement.int8 else cut.tensor_bytes
        codec_dev, codec_srv = (cut.quantize_ms, cut.dequantize_ms) if placement.int8 else (0.0, 0.0)
    if not network.online:
        return _infeasible(placement, network, app)
    dev_ms = (dev_ms + codec_dev) * device.speed_factor
    srv_ms = server.overhead_ms + (srv_part_ms + codec_srv) * server.speed_factor
    up, down = sent + REQUEST_OVERHEAD_BYTES, profile.output_bytes + RESPONSE_OVERHEAD_BYTES
    t = transfer(network, up, down)
    c_mj = compute_mj(dev_ms, device.watts)
    r_mj = radio_mj(network, t, srv_ms, energy)
    # The server part's throughput: the whole model's batched rate, scaled by the part's share.
    part_images_per_s = profile.images_per_s * profile.whole_ms / max(srv_part_ms + codec_srv, 1e-6) / server.speed_factor
    c_usd = compute_usd_per_1000(part_images_per_s, prices)
    b_usd = bandwidth_usd_per_1000(up, down, prices)
    return Prediction(
        placement.name, network.name, True, dev_ms + t.total_ms + srv_ms, dev_ms, srv_ms, t.total_ms,
        t.rtt_ms, t.up_ms, t.down_ms, t.loss_ms, up, down, c_mj + r_mj, c_mj, r_mj, c_usd + b_usd, c_usd, b_usd, app,
    )


_RANK = {"device": 0, "cloud": 1, "split": 2}  # on a tie, the simpler placement


def _order(p: Prediction, objective: Objective) -> tuple[float, int, str]:
    return (p.value(objective), _RANK[Placement.parse(p.placement).kind], p.placement)


@dataclass(frozen=True)
class Decision:
    network: str
    objective: Objective
    best: str
    value: float
    runner_up: str | None  # the next best placement
    runner_up_value: float | None
    # Value of the all-device, all-cloud and best split placements (None: not possible here).
    device: float | None
    cloud: float | None
    best_split: str | None
    best_split_value: float | None

    @property
    def ratio(self) -> float | None:
        """How many times the runner-up's value the best one beats it by (≥ 1)."""
        if self.runner_up_value is None or not math.isfinite(self.runner_up_value):
            return None
        return self.runner_up_value / self.value if self.value > 0 else math.inf

    def to_dict(self) -> dict:
        d = asdict(self)
        ratio = self.ratio
        d["ratio"] = None if ratio is None or not math.isfinite(ratio) else ratio
        d["margin"] = None if self.runner_up_value is None else self.runner_up_value - self.value
        return d


def decide(predictions: Sequence[Prediction], objective: Objective) -> Decision:
    """The best feasible placement for ``objective`` and what it beats."""
    if objective not in OBJECTIVES:
        raise InvalidRequest(f"objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    feasible = sorted((p for p in predictions if p.feasible), key=lambda p: _order(p, objective))
    if not feasible:
        raise InvalidRequest("no placement is possible (offline, and no device placement among the candidates)")
    best, rest = feasible[0], feasible[1:]
    by_name = {p.placement: p for p in feasible}
    splits = [p for p in feasible if p.placement.startswith("split@")]

    def value(name: str) -> float | None:
        p = by_name.get(name)
        return None if p is None else p.value(objective)

    return Decision(
        network=best.network, objective=objective, best=best.placement, value=best.value(objective),
        runner_up=rest[0].placement if rest else None, runner_up_value=rest[0].value(objective) if rest else None,
        device=value("device"), cloud=value("cloud"),
        best_split=splits[0].placement if splits else None,
        best_split_value=splits[0].value(objective) if splits else None,
    )


def choose(profile: ModelProfile, network: NetworkProfile, objective: Objective = "latency", *,
           candidates: Iterable[Placement] | None = None, **models: object) -> Placement:
    """The best of ``candidates`` (default: every placement of the profile) on ``network`` now.

    ``models``: ``device``, ``server``, ``energy``, ``prices`` as for :func:`predict`. The SDK passes
    only the placements it can run (the splits its bundle holds) and live network numbers.
    """
    cands = list(candidates) if candidates is not None else placements(profile)
    preds = [predict(p, network, profile, **models) for p in cands]  # type: ignore[arg-type]
    return Placement.parse(decide(preds, objective).best)


@dataclass
class Advice:
    """Every placement predicted on every network, and the best per network and objective."""

    profile: ModelProfile
    device: DeviceProfile
    server: ServerProfile
    energy: EnergyModel
    prices: CloudPrices
    networks: list[NetworkProfile]
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)  # network → placements
    decisions: dict[str, dict[str, Decision]] = field(default_factory=dict)  # network → objective → decision

    def to_dict(self) -> dict:
        return {
            "model": {"name": self.profile.name, "version": self.profile.version, "bundle": self.profile.bundle},
            "device": self.device.to_dict(),
            "server": self.server.to_dict(),
            "energy_model": self.energy.to_dict(),
            "cloud_prices": self.prices.to_dict(),
            "networks": {n.name: n.to_dict() for n in self.networks},
            "profile": self.profile.to_dict(),
            "best": {net: {obj: d.to_dict() for obj, d in ds.items()} for net, ds in self.decisions.items()},
            "predictions": {net: {p.placement: p.to_dict() for p in ps} for net, ps in self.predictions.items()},
        }


def advise(
    profile: ModelProfile,
    networks: Sequence[NetworkProfile],
    *,
    device: DeviceProfile = DEVICES["this-machine"],
    server: ServerProfile = DEFAULT_SERVER,
    energy: EnergyModel = DEFAULT_ENERGY,
    prices: CloudPrices = DEFAULT_PRICES,
    int8_transfer: bool = True,
) -> Advice:
    if not networks:
        raise InvalidRequest("name at least one network profile")
    names = [n.name for n in networks]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"network profiles need distinct names, got {names}")
    advice = Advice(profile, device, server, energy, prices, list(networks))
    cands = placements(profile, int8_transfer)
    for net in networks:
        preds = [predict(p, net, profile, device=device, server=server, energy=energy, prices=prices) for p in cands]
        advice.predictions[net.name] = preds
        advice.decisions[net.name] = {obj: decide(preds, obj) for obj in OBJECTIVES}
    return advice
