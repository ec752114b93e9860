"""Device policies as objects: names convert at the boundary, each policy orders placements, auto's
rule hears of every attempt; HybridModel runs the order with a cloud on a mock transport."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np
import pytest

from tandem.advisor.placement import CLOUD, DEVICE, Placement
from tandem.bundle.runtime import OnnxModel
from tandem.device.cloud_client import CloudClient
from tandem.device.hybrid import HybridModel, LatencyRule, NothingAvailable
from tandem.device.policies import (
    ONLY_CLOUD,
    ONLY_DEVICE,
    PREFER_CLOUD,
    PREFER_DEVICE,
    Auto,
    Measurement,
    Ordered,
    Split,
    as_policy,
)
from tandem.device.wire import OipV2
from tandem.errors import ConfigError, InvalidRequest

SPLIT5 = Placement.split(5, int8=True)


class Sides:
    def __init__(self, candidates: list[Placement], rule: object = None) -> None:
        self._candidates = candidates
        self.auto = rule or LatencyRule()

    def candidates(self) -> list[Placement]:
        return self._candidates


class Recording:
    """An auto rule that picks ``pick`` and writes down what it is told."""

    def __init__(self, pick: str) -> None:
        self.pick = pick
        self.offered: list[list[str]] = []
        self.told: list[tuple[str, bool]] = []
        self.measurements: list[Measurement] = []

    def choose(self, available: Sequence[str]) -> str:
        self.offered.append(list(available))
        return self.pick

    def observe(self, where: str, seconds: float, ok: bool) -> None:
        self.told.append((where, ok))

    def measured(self, m: Measurement) -> None:
        self.measurements.append(m)


@pytest.mark.parametrize(("name", "order"), [
    ("only_device", (DEVICE,)), ("prefer_device", (DEVICE, CLOUD)), ("prefer_cloud", (CLOUD, DEVICE)),
    ("only_cloud", (CLOUD,)), ("split@5+int8", (SPLIT5, DEVICE)), ("split@7", (Placement.split(7), DEVICE)),
])
def test_names_become_policies_that_order_placements(name: str, order: tuple[Placement, ...]) -> None:
    policy = as_policy(name)
    assert policy.order(Sides([])) == order and str(policy) == name
    assert as_policy(policy) is policy


def test_bad_names_and_splits_are_refused() -> None:
    for bad in ("sometimes", "device", "split@x"):
        with pytest.raises(InvalidRequest):
            as_policy(bad)
    with pytest.raises(InvalidRequest, match="split placement"):
        Split(CLOUD)
    with pytest.raises(InvalidRequest, match="at least one"):
        Ordered("nothing", ())


def test_auto_asks_its_rule_among_the_candidates_and_falls_back_to_the_other_side() -> None:
    rule = Recording("split@5+int8")
    sides = Sides([DEVICE, CLOUD, SPLIT5])
    assert Auto(rule).order(sides) == (SPLIT5, DEVICE)
    assert rule.offered == [["device", "cloud", "split@5+int8"]]
    rule.pick = "device"
    assert Auto(rule).order(sides) == (DEVICE, CLOUD)
    model_rule = Recording("cloud")
    assert as_policy("auto").order(Sides([CLOUD], model_rule)) == (CLOUD, DEVICE)  # the model's rule
    m = Measurement("cloud", 1, 0.0, 5.0, 10, 10)
    Auto(rule).observe(sides, CLOUD, 0.005, True, m)
    Auto(rule).observe(sides, DEVICE, 0.5, False, None)
    assert rule.told == [("cloud", True), ("device", False)] and rule.measurements == [m]
    latency = LatencyRule()
    Auto(latency).observe(sides, CLOUD, 0.005, True, m)  # no ``measured``: not called
    assert latency.ewma == {"cloud": 0.005}
    with pytest.raises(InvalidRequest, match="placement 'anywhere'"):
        Auto(Recording("anywhere")).order(sides)


def test_fixed_policies_learn_nothing() -> None:
    for policy in (ONLY_DEVICE, PREFER_DEVICE, PREFER_CLOUD, ONLY_CLOUD):
        policy.observe(Sides([]), DEVICE, 1.0, False, None)  # no error, no state


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"model_name": "m", "model_version": "4", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]})


def test_hybrid_model_runs_a_policy_object_and_converts_names() -> None:
    cloud = CloudClient("http://cloud", "m", protocol=OipV2(binary=False), transport=httpx.MockTransport(answer))
    x = {"x": np.zeros((1, 2), np.float32)}
    rule = Recording("cloud")
    hm = HybridModel(None, cloud, policy=Auto(rule))
    r = hm.predict(x)
    assert (r.where, r.placement, r.policy, r.version, r.fallback) == ("cloud", "cloud", "auto", 4, None)
    assert rule.told == [("cloud", True)] and rule.measurements[0].sent_bytes > 0
    assert rule.offered == [["cloud"]]  # no local model: the cloud alone
    r = hm.predict(x, policy=Ordered("device_then_cloud", (DEVICE, CLOUD)))
    assert (r.where, r.policy, r.fallback) == ("cloud", "device_then_cloud", None)
    assert hm.predict(x, policy="only_cloud").where == "cloud"
    with pytest.raises(ConfigError, match="no local model"):
        hm.predict(x, policy="only_device")
    with pytest.raises(NothingAvailable, match="policy split@5"):
        HybridModel(None, None).predict(x, policy="split@5")


def test_a_cloud_only_model_attaches_no_fallback_note_to_its_answers() -> None:
    """No local model was given: answering from the cloud is no fallback, under any policy, every call."""
    cloud = CloudClient("http://cloud", "m", protocol=OipV2(binary=False), transport=httpx.MockTransport(answer))
    hm = HybridModel(None, cloud)  # prefer_device, the default
    x = {"x": np.zeros((1, 2), np.float32)}
    for policy in ("prefer_device", "prefer_cloud", "auto", "prefer_device"):
        r = hm.predict(x, policy=policy)
        assert (r.where, r.fallback) == ("cloud", None), policy
    with pytest.raises(ConfigError, match="no local model"):  # still said when nothing else answers
        hm.predict(x, policy="only_device")


class Clock:
    """Time as the test says it passes: the device model takes 20 ms a call, the cloud 2 ms."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowModel(OnnxModel):
    """The tiny test model, taking ``seconds`` of the test's clock per run."""

    clock: Clock
    seconds = 0.020

    def run(self, pixels: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
        self.clock.now += self.seconds
        return super().run(pixels, batch)


def test_auto_returns_to_the_cloud_within_a_few_calls_after_the_link_recovers(tmp_path) -> None:
    """A link that goes down and comes back, the default auto rule and circuit breaker: while down,
    the device answers and the cloud is tried at most one call in five until the breaker opens; once
    the link is back (and the breaker's cool-down over) the cloud wins the calls back within a few."""
    from tandem.bundle import Bundle
    from tandem.device.cloud_client import CircuitBreaker
    from tandem.testing.bundles import H, W, make_bundle

    clock = Clock()
    link = {"up": True, "requests": 0}

    def cloud_side(request: httpx.Request) -> httpx.Response:
        link["requests"] += 1
        if not link["up"]:
            raise httpx.ConnectError("network is unreachable", request=request)
        clock.now += 0.002
        return httpx.Response(200, json={"model_name": "faces", "model_version": "1", "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]})

    model = SlowModel.open(Bundle.load(make_bundle(tmp_path / "b", None)))
    model.clock = clock
    cloud = CloudClient("http://cloud", "faces", protocol=OipV2(binary=False), retries=0,
                        breaker=CircuitBreaker(failures=3, cooldown_s=30, clock=clock),
                        transport=httpx.MockTransport(cloud_side))
    hm = HybridModel(model, cloud, policy="auto", clock=clock)
    x = {"pixels": np.zeros((1, H, W, 3), np.uint8)}

    def calls(n: int) -> list[str]:
        return [hm.predict(x).placement for _ in range(n)]

    assert calls(10)[-3:] == ["cloud"] * 3  # each tried once, then the faster
    link["up"], link["requests"] = False, 0
    down = calls(30)
    assert set(down[1:]) == {"device"} and link["requests"] <= 3  # the breaker opened after three
    clock.now += 30  # the cool-down passes; the link is back
    link["up"] = True
    back = calls(10)
    assert "cloud" in back[:6] and back[-4:] == ["cloud"] * 4


def test_the_latency_rule_returns_to_a_side_that_was_slow_at_its_next_probe() -> None:
    """The cloud was slow (1 s) long enough to lose to the device (20 ms); when it is fast again (2 ms)
    the next probe's measurement replaces its stale average, and it wins at once."""
    rule = LatencyRule(probe_every=10)
    took = {"device": 0.020, "cloud": 1.0}

    def calls(n: int) -> list[str]:
        picks = []
        for _ in range(n):
            pick = rule.choose(["device", "cloud"])
            rule.observe(pick, took[pick], True)
            picks.append(pick)
        return picks

    assert calls(41)[-1] == "device"
    took["cloud"] = 0.002
    back = calls(12)
    assert "cloud" in back[:10] and back[-2:] == ["cloud", "cloud"]
