"""``auto`` by the placement advisor: predict every placement from the model's profile and what this
device measures now, and run the best.

:class:`AdvisorRule` implements :class:`~tandem.device.policies.AutoPolicy` (``choose``/``observe``)
and takes each call's parts through ``measured``:

- **device speed**: measured compute (the whole model, or a split's head with its int8 encoding)
  per row ÷ the profile's time for the same part, an EWMA: the device profile's speed factor, live;
- **network**: for every call that crossed it, the round trip less the server's predicted time,
  against the bytes sent (computed from the profile as :func:`tandem.advisor.predict` does). A
  recency-weighted least-squares line ``t = c + b·bytes`` over the last ``window`` calls gives the
  fixed part ``c`` (RTT and the answer's download, the same for every placement: they all return
  the same outputs) and the uplink ``8/b``. While the recent calls all sent about the same bytes
  the slope cannot be told apart from ``c``: the last fitted uplink (else the prior network's) is
  kept and only ``c`` is refitted;
- **decision**: :func:`tandem.advisor.predict` of every available placement with that live
  network and calibrated device, the best by the objective; redone only when the network estimate
  moves or the device's speed leaves the range in which the best stays the best, so that a call
  costs a few comparisons;
- **exploration**: the network is only measured by using it. When the device wins, the best online
  placement is probed now and then, but probes may take at most ``explore_fraction`` of the time
  spent predicting (so a 2 s probe on 2G waits until 40 s of 3 ms device calls have run at 5%);
  and at least one probe is made every ``probe_every_s`` whatever the budget, so that a link that
  recovers is found without being told (one probe per ``probe_every_s`` is what a slow link costs).
  A call that crosses the network under half the time the estimate predicts replaces the estimate
  (the link changed) and the next call measures it at another size.
  :meth:`network_changed` (an OS connectivity callback) forgets the network and probes at once.
  When an online placement wins, every call measures the network, and a slower network moves the
  estimate within a few calls.

Needs only a saved :class:`~tandem.advisor.ModelProfile` (advice.json's ``profile``), no ONNX package.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tandem.advisor.devices import DEVICES, DeviceProfile
from tandem.advisor.networks import NETWORKS, NetworkProfile
from tandem.advisor.placement import (
    DEFAULT_SERVER,
    REQUEST_OVERHEAD_BYTES,
    RESPONSE_OVERHEAD_BYTES,
    Objective,
    Placement,
    ServerProfile,
    predict,
)
from tandem.advisor.profile import ModelProfile
from tandem.errors import ConfigError, InvalidRequest

if TYPE_CHECKING:
    from tandem.device.policies import Measurement

# A line needs sizes this far apart (max ÷ min bytes) to tell the uplink from the fixed part.
SIZE_SPREAD = 1.5


@dataclass(frozen=True)
class _Sample:
    up_bytes: float
    ms: float  # the round trip less the server's predicted time


@dataclass(frozen=True)
class _Plan:
    names: tuple[str, ...]  # the candidates it was made for
    network_version: int
    speed: float | None
    best: str
    probe: str | None
    probe_ms: float  # the probe's predicted latency: what it takes from the exploration budget
    speeds: tuple[float, float]  # the device speed factors for which ``best`` stays the best

    def holds(self, names: tuple[str, ...], network_version: int, speed: float | None) -> bool:
        if self.names != names or self.network_version != network_version:
            return False
        if speed is None or self.speed is None:
            return speed is self.speed
        return self.speeds[0] <= speed <= self.speeds[1]


@dataclass(frozen=True)
class LinkEstimate:
    """The network as the last calls saw it: ``fixed_ms`` + ``ms_per_byte``·bytes sent."""

    fixed_ms: float
    ms_per_byte: float
    samples: int
    slope_fitted: bool  # False: the slope is the last fitted one or the prior's


class AdvisorRule:
    """The ``auto`` hook driven by the advisor's cost model (module docstring).

    ``profile``: the model's profile (``ModelProfile.from_dict(advice["profile"])``). ``objective``:
    latency, energy or cost. ``prior``: a network to assume before any call crossed it (None: probe
    it first); its down/up ratio also splits the fixed part into RTT and download. ``device``: the
    device profile to calibrate (its watts are kept; its speed is measured). ``server``: the
    server's speed and per-request overhead. ``probe_every_s``: the longest time between probes,
    budget or not (None: the budget alone); ``clock``: for it, injectable so tests need not sleep.
    ``failure_backoff_calls``: how many calls a placement that failed is left alone.
    """

    def __init__(
        self,
        profile: ModelProfile,
        *,
        objective: Objective = "latency",
        prior: NetworkProfile | None = None,
        device: DeviceProfile = DEVICES["this-machine"],
        server: ServerProfile = DEFAULT_SERVER,
        window: int = 8,
        forget: float = 0.5,
        alpha: float = 0.3,
        explore_fraction: float = 0.05,
        min_calls_between_probes: int = 10,
        failure_backoff_calls: int = 5,
        probe_every_s: float | None = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < forget <= 1 or not 0 < alpha <= 1 or window < 2 or not 0 <= explore_fraction < 1:
            raise InvalidRequest("AdvisorRule: need 0 < forget ≤ 1, 0 < alpha ≤ 1, window ≥ 2, 0 ≤ explore_fraction < 1")
        self.profile = profile
        self.objective: Objective = objective
        self.prior = prior
        self.device = device
        self.server = server
        self.forget = forget
        self.alpha = alpha
        self.explore_fraction = explore_fraction
        self.min_calls_between_probes = min_calls_between_probes
        self.failure_backoff_calls = failure_backoff_calls
        self.probe_every_s = probe_every_s
        self.clock = clock
        self._last_probe_at = clock()
        shape = prior if prior is not None and prior.online else NETWORKS["4g"]
        self._down_ratio = shape.down_mbps / shape.up_mbps
        self._prior_slope = 8.0 / (shape.up_mbps * 1000.0)  # ms per byte: the prior's uplink
        self._slope = self._prior_slope  # the last fitted uplink, the prior's until one is fitted
        self._samples: deque[_Sample] = deque(maxlen=window)
        self.speed: float | None = None  # measured device time ÷ profiled time
        self.calls = 0
        self.busy_ms = 0.0  # time of every call observed
        self.explore_ms = 0.0  # time of the probes among them
        self._last_probe_call = -(10**9)
        self._probing: str | None = None
        self._probe_now = prior is None  # nothing known of the network: measure it at the first chance
        self._failed_until: dict[str, int] = {}
        self._current: _Plan | None = None
        self._parse_cache: dict[tuple[str, ...], list[Placement]] = {}
        self._names: dict[str, Placement | None] = {}
        self._network_version = 0
        self.decisions: list[str] = []  # every choice, for inspection (bounded)
        self._lock = threading.Lock()

    # --- what the rule believes now ------------------------------------------------------------
    def link(self) -> LinkEstimate | None:
        """The fitted line over the recent calls, or None before any call crossed the network."""
        if not self._samples:
            return None
        n = len(self._samples)
        ws = [self.forget ** (n - 1 - i) for i in range(n)]
        xs = [s.up_bytes for s in self._samples]
        ys = [s.ms for s in self._samples]
        w = sum(ws)
        if max(xs) >= SIZE_SPREAD * max(min(xs), 1.0):
            mx = sum(wi * x for wi, x in zip(ws, xs, strict=True)) / w
            my = sum(wi * y for wi, y in zip(ws, ys, strict=True)) / w
            sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(ws, xs, strict=True))
            sxy = sum(wi * (x - mx) * (y - my) for wi, x, y in zip(ws, xs, ys, strict=True))
            slope = sxy / sxx if sxx > 0 else -1.0
            if slope > 0:
                fixed = my - slope * mx
                if fixed >= 0:
                    return LinkEstimate(fixed, slope, n, True)
        fixed = sum(wi * (y - self._slope * x) for wi, x, y in zip(ws, xs, ys, strict=True)) / w
        if fixed < 0:  # the assumed uplink is slower than the calls were: all their time goes to bytes
            slope = sum(wi * y for wi, y in zip(ws, ys, strict=True)) / sum(wi * x for wi, x in zip(ws, xs, strict=True))
            return LinkEstimate(0.0, slope, n, False)
        return LinkEstimate(fixed, self._slope, n, False)

    def network(self) -> NetworkProfile | None:
        """The live network the decisions use (None: nothing measured and no prior)."""
        est = self.link()
        if est is None:
            return self.prior if self.prior is not None and self.prior.online else None
        up_mbps = 8.0 / (max(est.ms_per_byte, 1e-9) * 1000.0)
        down_mbps = up_mbps * self._down_ratio
        down_ms = (self.profile.output_bytes + RESPONSE_OVERHEAD_BYTES) * 8 / (down_mbps * 1000.0)
        radio = self.prior.radio if self.prior is not None and self.prior.online else "lte"
        return NetworkProfile.live(rtt_ms=max(est.fixed_ms - down_ms, 0.0), up_mbps=up_mbps, down_mbps=down_mbps,
                                   radio=radio)

    def calibrated_device(self) -> DeviceProfile:
        if self.speed is None:
            return self.device
        return replace(self.device, speed_factor=self.speed, source="measured by AdvisorRule on this device")

    # --- AutoPolicy ------------------------------------------------------------------------------
    def choose(self, available: Sequence[str]) -> str:
        if not available:
            raise ConfigError("auto policy: neither the device nor the cloud is available")
        with self._lock:
            self.calls += 1
            pick = self._choose(list(available))
            self.decisions.append(pick)
            if len(self.decisions) > 10_000:
                del self.decisions[:5_000]
            return pick

    def observe(self, where: str, seconds: float, ok: bool) -> None:
        with self._lock:
            ms = seconds * 1000.0
            self.busy_ms += ms
            if self._probing == where:
                self.explore_ms += ms
            self._probing = None
            if not ok:
                self._failed_until[where] = self.calls + self.failure_backoff_calls

    def measured(self, m: Measurement) -> None:
        """One successful call's parts (HybridModel calls this after ``observe``)."""
        placement = self._placement(m.placement)
        if placement is None:
            return
        rows = max(m.rows, 1)
        with self._lock:
            part_ms = self._device_part_ms(placement)
            if m.device_ms > 0 and part_ms:
                ratio = (m.device_ms / rows) / part_ms
                self.speed = ratio if self.speed is None else self.alpha * ratio + (1 - self.alpha) * self.speed
            if placement.kind != "device" and m.round_trip_ms > 0:
                up = self._up_bytes(placement, rows)
                if up is not None:
                    server_ms = self.server.overhead_ms + rows * self._server_part_ms(placement) * self.server.speed_factor
                    sample = _Sample(up, max(m.round_trip_ms - server_ms, 0.0))
                    est = self.link()
                    if est is not None and sample.ms < 0.5 * (est.fixed_ms + est.ms_per_byte * up):
                        # The link is far faster than it was (a recovery, another network): its past says nothing now.
                        self._samples.clear()
                        self._slope = self._prior_slope
                        self._last_probe_at = -math.inf  # and measure it at another size at the next chance
                    self._samples.append(sample)
                    est = self.link()
                    if est is not None and est.slope_fitted:
                        self._slope = est.ms_per_byte
                    self._network_version += 1

    def network_changed(self) -> None:
        """Forget the measured network (the OS says the connection changed): the next choice probes it."""
        with self._lock:
            self._samples.clear()
            self._network_version += 1
            self._failed_until.clear()
            self._probe_now = True

    # --- inside ----------------------------------------------------------------------------------
    def _choose(self, available: list[str]) -> str:
        usable = tuple(available)
        if self._failed_until:
            self._failed_until = {k: v for k, v in self._failed_until.items() if v > self.calls}
            usable = tuple(a for a in available if a not in self._failed_until) or usable
        cands = self._parsed(usable)
        if not cands:
            return usable[0]
        online = [p for p in cands if p.kind != "device"]
        local = len(online) < len(cands)
        if local and self.speed is None:
            return "device"  # calibrate first: one run of the local model
        if online and (self._probe_now or not self._samples):
            net = self.network()
            if net is None:
                # Nothing known of the network: measure it now, and again after a failed try's back-off.
                if self._probe_now or not local or self.calls - self._last_probe_call >= self.failure_backoff_calls:
                    self._probe_now = False
                    return self._probe(next((p.name for p in online if p.kind == "cloud"), online[0].name))
                return "device"
            if self._probe_now:  # told the network changed: measure the best-looking online placement
                self._probe_now = False
                return self._probe(self._ranked(online, net)[0])
        plan = self._plan(usable, cands)
        if plan.probe is not None and (
                (self.calls - self._last_probe_call >= self.min_calls_between_probes
                 and self.explore_ms + plan.probe_ms <= self.explore_fraction * self.busy_ms)
                or (self.probe_every_s is not None and self.clock() - self._last_probe_at >= self.probe_every_s)):
            return self._probe(plan.probe)
        return plan.best

    def _placement(self, name: str) -> Placement | None:
        if name not in self._names:
            if len(self._names) > 256:
                self._names.clear()
            self._names[name] = _parse(name)
        return self._names[name]

    def _parsed(self, names: tuple[str, ...]) -> list[Placement]:
        got = self._parse_cache.get(names)
        if got is None:
            got = [p for p in (self._placement(a) for a in names) if p is not None and self._predictable(p)]
            if len(self._parse_cache) > 64:
                self._parse_cache.clear()
            self._parse_cache[names] = got
        return got

    def _ranked(self, cands: list[Placement], net: NetworkProfile | None) -> list[str]:
        dev = self.calibrated_device()
        net = net or _OFFLINE
        # On a tie, the simpler placement first (as tandem.advisor.decide).
        return [name for *_, name in sorted(
            (predict(p, net, self.profile, device=dev, server=self.server).value(self.objective), _RANK[p.kind], p.name)
            for p in cands)]

    def _plan(self, names: tuple[str, ...], cands: list[Placement]) -> _Plan:
        """The best placement and the probe to make when the budget allows, for what is known now:
        kept while the candidates and the network estimate stay and the device's speed stays within
        the range where the best is still the best, so that a call costs a few comparisons."""
        plan = self._current
        if plan is not None and plan.holds(names, self._network_version, self.speed):
            return plan
        net = self.network()
        usable = cands if net is not None else [p for p in cands if p.kind == "device"]
        best = self._ranked(usable, net)[0]
        probe = self._probe_candidate(best, cands, net)
        probe_ms = math.inf
        if probe is not None:
            probe_ms = predict(Placement.parse(probe), net or _OFFLINE, self.profile, device=self.calibrated_device(),
                               server=self.server).latency_ms
        self._current = _Plan(names, self._network_version, self.speed, best,
                              probe if math.isfinite(probe_ms) else None, probe_ms,
                              self._speeds_keeping(best, usable, net))
        return self._current

    def _speeds_keeping(self, best: str, cands: list[Placement], net: NetworkProfile | None) -> tuple[float, float]:
        """The device speed factors s for which ``best`` stays the best: every objective is a + b·s
        in the device's speed (its compute time and energy scale with it), so each rival bounds s
        on one side."""
        s0 = self.calibrated_device().speed_factor
        net = net or _OFFLINE
        lines = {}
        for p in cands:
            v1, v2 = (predict(p, net, self.profile, device=replace(self.device, speed_factor=s), server=self.server)
                      .value(self.objective) for s in (s0, 2 * s0))
            if math.isfinite(v1) and math.isfinite(v2):
                slope = (v2 - v1) / s0
                lines[p.name] = (v1 - slope * s0, slope)
        lo, hi = 0.0, math.inf
        if best not in lines:
            return s0, s0
        a, b = lines.pop(best)
        for aj, bj in lines.values():
            if b > bj:
                hi = min(hi, (aj - a) / (b - bj))
            elif b < bj:
                lo = max(lo, (aj - a) / (b - bj))
        return lo, hi

    def _probe_candidate(self, best: str, cands: list[Placement], net: NetworkProfile | None) -> str | None:
        """What to try instead of ``best`` when the exploration budget allows."""
        online = [p for p in cands if p.kind != "device"]
        if net is None or not online:
            return None
        est = self.link()
        if best == "device":
            pool = online  # the network is only measured by crossing it
        elif est is not None and not est.slope_fitted:
            # Every call measures the network already, but at one size: another size pins the uplink down.
            sent = self._up_bytes(Placement.parse(best), 1) or 1.0
            pool = [p for p in online if max(self._up_bytes(p, 1) or 1.0, sent) >= SIZE_SPREAD * min(
                self._up_bytes(p, 1) or 1.0, sent)] or [p for p in cands if p.name != best]
        else:
            pool = [p for p in cands if p.name != best]  # the runner-up: the device's speed, say
        return self._ranked(pool, net)[0] if pool else None

    def _probe(self, name: str) -> str:
        self._probing = name
        self._last_probe_call = self.calls
        self._last_probe_at = self.clock()
        return name

    def _predictable(self, p: Placement) -> bool:
        return p.kind != "split" or any(c.k == p.k for c in self.profile.cuts)

    def _device_part_ms(self, p: Placement) -> float | None:
        if p.kind == "device":
            return self.profile.whole_ms
        if p.kind == "split" and self._predictable(p):
            cut = self.profile.cut(p.k)
            return cut.head_ms + (cut.quantize_ms if p.int8 else 0.0)
        return None

    def _server_part_ms(self, p: Placement) -> float:
        if p.kind == "cloud":
            return self.profile.whole_ms
        cut = self.profile.cut(p.k)
        return cut.tail_ms + (cut.dequantize_ms if p.int8 else 0.0)

    def _up_bytes(self, p: Placement, rows: int) -> float | None:
        if p.kind == "cloud":
            return rows * self.profile.input_bytes + REQUEST_OVERHEAD_BYTES
        if not self._predictable(p):
            return None
        cut = self.profile.cut(p.k)
        return rows * (cut.int8_bytes if p.int8 else cut.tensor_bytes) + REQUEST_OVERHEAD_BYTES


_OFFLINE = NETWORKS["offline"]
_RANK = {"device": 0, "cloud": 1, "split": 2}


def _parse(name: str) -> Placement | None:
    try:
        return Placement.parse(name)
    except InvalidRequest:
        return None
