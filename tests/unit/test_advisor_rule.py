"""AdvisorRule, the advisor-driven ``auto`` policy, fed with calls on simulated networks: it calibrates
the device, measures the link from the calls that cross it, switches placement when the network
changes, and keeps its exploration within budget."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from tandem.advisor import (
    DEVICES,
    NETWORKS,
    CutProfile,
    ModelProfile,
    NetworkProfile,
    Placement,
    ServerProfile,
    predict,
)
from tandem.device.advisor_rule import AdvisorRule
from tandem.device.hybrid import HybridModel, Measurement

SERVER = ServerProfile(0.1, 2.0)  # a server 10x this machine
FAST = NetworkProfile("lan", 5.0, 100.0, 100.0, 0.0, "wifi")
SLOW = NETWORKS["2g"]
AVAILABLE = ["device", "cloud", "split@80", "split@80+int8"]


def profile(whole_ms: float = 40.0) -> ModelProfile:
    cut = CutProfile(k=80, tensor="t", node="n", op="Conv", shape=[1, 512], tensor_bytes=2048, int8_bytes=520,
                     head_ms=0.75 * whole_ms, tail_ms=0.25 * whole_ms, quantize_ms=0.05, dequantize_ms=0.02,
                     head_file_bytes=1, head_peak_bytes=1)
    return ModelProfile(bundle="b", name="m", version=1, machine="x", threads=1, repeats=3, input_bytes=22_500,
                        output_bytes=144, whole_ms=whole_ms, int8_ms=None, images_per_s=100.0, batch=8,
                        fp32_file_bytes=1, int8_file_bytes=None, peak_activation_bytes=1, peak_bytes=1, rss_bytes=0,
                        compute_nodes=90, cuts=[cut])


def run(rule: AdvisorRule, net: NetworkProfile, calls: int, speed: float = 1.0) -> list[str]:
    """``calls`` predictions on ``net`` with a device ``speed`` times this machine; each call takes what
    the cost model says it takes there (the truth the rule must discover)."""
    device = replace(DEVICES["this-machine"], speed_factor=speed)
    picks = []
    for _ in range(calls):
        pick = rule.choose(AVAILABLE)
        p = predict(Placement.parse(pick), net, rule.profile, device=device, server=SERVER)
        rule.observe(pick, p.latency_ms / 1000, True)
        rule.measured(Measurement(pick, 1, p.device_ms, p.network_ms + p.server_ms if pick != "device" else 0.0, 0, 0))
        picks.append(pick)
    return picks


def test_calibrates_the_device_then_measures_the_network_then_picks_the_fastest():
    rule = AdvisorRule(profile(), server=SERVER)
    picks = run(rule, FAST, 300, speed=2.0)
    assert picks[:2] == ["device", "cloud"]  # calibrate, then measure the link
    assert rule.speed == pytest.approx(2.0)
    assert Counter(picks[2:]).most_common(1)[0][0] == "cloud"
    assert {"split@80", "split@80+int8"} & set(picks)  # another payload size, probed within budget
    net = rule.network()
    assert net is not None and net.rtt_ms == pytest.approx(FAST.rtt_ms, abs=0.5)
    assert net.up_mbps == pytest.approx(FAST.up_mbps, rel=0.05)


def test_switches_to_the_device_when_the_network_slows_and_back_when_it_recovers():
    rule = AdvisorRule(profile(), server=SERVER)
    assert run(rule, FAST, 15)[-1] == "cloud"
    slow = run(rule, SLOW, 6)
    assert slow[-3:] == ["device"] * 3  # re-decided from the calls that crossed the slow link
    assert rule.network().rtt_ms > 500  # type: ignore[union-attr]
    rule.network_changed()  # e.g. the phone joined Wi-Fi
    back = run(rule, FAST, 6)
    assert back[0] != "device" and back[-1] == "cloud"


def test_a_slow_device_on_a_fast_link_goes_online_and_a_fast_device_stays_local():
    fast_device = AdvisorRule(profile(whole_ms=2.0), server=SERVER)
    assert Counter(run(fast_device, FAST, 40)).most_common(1)[0][0] == "device"
    slow_device = AdvisorRule(profile(whole_ms=2.0), server=SERVER)
    assert Counter(run(slow_device, FAST, 40, speed=20.0)).most_common(1)[0][0] == "cloud"


def test_exploration_stays_within_its_budget():
    rule = AdvisorRule(profile(whole_ms=40.0), server=SERVER, explore_fraction=0.05)
    picks = run(rule, SLOW, 2000)
    probes = [p for p in picks[2:] if p != "device"]
    assert probes  # the network is measured again now and then
    assert rule.explore_ms <= 0.05 * rule.busy_ms + max(
        predict(Placement.parse(p), SLOW, rule.profile, server=SERVER).latency_ms for p in set(probes))
    assert rule.explore_ms > 0


def test_the_slope_is_fitted_once_two_sizes_crossed_the_link():
    rule = AdvisorRule(profile(whole_ms=40.0), server=SERVER, prior=NETWORKS["4g"])
    device = DEVICES["this-machine"]
    for pick in ["cloud", "split@80", "cloud", "split@80+int8"]:
        p = predict(Placement.parse(pick), FAST, rule.profile, device=device, server=SERVER)
        rule.measured(Measurement(pick, 1, p.device_ms, p.network_ms + p.server_ms, 0, 0))
    est = rule.link()
    assert est is not None and est.slope_fitted
    assert 8 / (est.ms_per_byte * 1000) == pytest.approx(FAST.up_mbps, rel=0.01)


def test_a_failed_placement_is_left_alone_for_a_few_calls_then_tried_again():
    rule = AdvisorRule(profile(), server=SERVER, prior=FAST)
    run(rule, FAST, 5)
    rule.observe("cloud", 2.0, ok=False)
    picks = [rule.choose(AVAILABLE) for _ in range(4)]
    assert "cloud" not in picks
    assert run(rule, FAST, 2)[-1] == "cloud"  # the link is back: so is the cloud


def test_returns_online_after_a_slow_link_recovers_without_being_told():
    """No network_changed(): the app makes a call a second, the link was 2G and is fast again. A
    probe at least every probe_every_s (15 s) finds it, and a link far faster than estimated
    replaces the slow estimate at once; on the slow link the probes cost at most one per 15 s."""
    now = [0.0]
    rule = AdvisorRule(profile(), server=SERVER, clock=lambda: now[0])

    def calls(net: NetworkProfile, n: int) -> list[str]:
        picks = []
        for _ in range(n):
            picks += run(rule, net, 1)
            now[0] += 1.0
        return picks

    assert calls(FAST, 15)[-1] == "cloud"
    slow = calls(SLOW, 60)
    assert slow[-3:] == ["device"] * 3 and sum(p != "device" for p in slow[10:]) <= 4
    back = calls(FAST, 20)
    first_online = next(i for i, p in enumerate(back) if p == "cloud")
    assert first_online <= 16 and back[-1] == "cloud"


def test_hybrid_model_offers_its_splits_to_auto(tmp_path):
    from tandem.export.split import split_bundle
    from tandem.testing.bundles import make_bundle

    b = make_bundle(tmp_path / "b", None)
    split_bundle(b, [5])
    assert HybridModel(b).split_placements() == ["split@5", "split@5+int8"]
    assert HybridModel(None).split_placements() == []
