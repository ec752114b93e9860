"""The placement advisor's models on numbers small enough to check by hand."""

from __future__ import annotations

import json
import math

import pytest

from tandem.advisor import (
    CLOUD,
    DEVICE,
    DEVICES,
    NETWORKS,
    CloudPrices,
    CutProfile,
    DeviceProfile,
    EnergyModel,
    ModelProfile,
    NetworkProfile,
    Placement,
    ServerProfile,
    advise,
    choose,
    decide,
    parse_network,
    placements,
    predict,
    transfer,
)
from tandem.advisor.cost import bandwidth_usd_per_1000, compute_usd_per_1000
from tandem.advisor.devices import device_profile
from tandem.advisor.energy import RADIO_POWER, compute_mj, radio_mj
from tandem.advisor.placement import REQUEST_OVERHEAD_BYTES, RESPONSE_OVERHEAD_BYTES
from tandem.errors import InvalidRequest

# 1 Mbps = 1,000 bits/ms: 1,000 bytes take 8 ms at 1 Mbps.
LINK = NetworkProfile("test", rtt_ms=50.0, up_mbps=1.0, down_mbps=8.0, loss=0.0, radio="lte")


def cut(k: int, head_ms: float, tail_ms: float, nbytes: int, **kw: object) -> CutProfile:
    base = dict(k=k, tensor=f"t{k}", node=f"n{k}", op="Conv", shape=[1, nbytes // 4], tensor_bytes=nbytes,
                int8_bytes=nbytes // 4 + 8, head_ms=head_ms, tail_ms=tail_ms, quantize_ms=0.5, dequantize_ms=0.25,
                head_file_bytes=1000 * k, head_peak_bytes=2000 * k)
    base.update(kw)
    return CutProfile(**base)  # type: ignore[arg-type]


@pytest.fixture()
def profile() -> ModelProfile:
    """A 10 ms model: 9,600 input bytes, 200 output bytes; cuts after 2 ms (40 kB) and after 9 ms (800 B)."""
    return ModelProfile(
        bundle="b", name="m", version=1, machine="test", threads=1, repeats=1, input_bytes=9600, output_bytes=200,
        whole_ms=10.0, int8_ms=5.0, images_per_s=200.0, batch=8, fp32_file_bytes=4_000_000, int8_file_bytes=1_000_000,
        peak_activation_bytes=100_000, peak_bytes=4_100_000, rss_bytes=0, compute_nodes=20,
        cuts=[cut(3, 2.0, 8.0, 40_000), cut(15, 9.0, 1.0, 800)],
    )


def test_transfer_is_rtt_plus_bytes_over_bandwidth():
    t = transfer(LINK, up_bytes=1000, down_bytes=1000)
    assert t.rtt_ms == 50 and t.up_ms == pytest.approx(8.0) and t.down_ms == pytest.approx(1.0) and t.loss_ms == 0
    assert t.total_ms == pytest.approx(59.0)


def test_loss_charges_one_timeout_with_the_chance_of_losing_any_packet():
    lossy = NetworkProfile("lossy", 50.0, 1.0, 8.0, loss=0.01)
    t = transfer(lossy, up_bytes=1448 * 3, down_bytes=100)  # 3 + 1 packets
    assert t.loss_ms == pytest.approx((1 - 0.99 ** 4) * 200.0)  # RTO: max(200 ms, 2·RTT)
    slow = NetworkProfile("slow", 300.0, 1.0, 1.0, loss=0.01)
    assert transfer(slow, 100, 100).loss_ms == pytest.approx((1 - 0.99 ** 2) * 600.0)


def test_offline_sends_nothing():
    with pytest.raises(InvalidRequest, match="offline"):
        transfer(NETWORKS["offline"], 1, 1)


def test_energy_is_power_times_time_and_radio_follows_huang_et_al():
    assert compute_mj(10.0, 3.0) == pytest.approx(30.0)  # 3 W for 10 ms
    t = transfer(LINK, up_bytes=1000, down_bytes=1000)  # 8 ms up, 1 ms down
    p = RADIO_POWER["lte"]
    expected_uj = ((p.alpha_up_mw_per_mbps * 1.0 + p.beta_mw) * 8.0 + (p.alpha_down_mw_per_mbps * 8.0 + p.beta_mw) * 1.0
                   + p.beta_mw * (50.0 + 4.0))
    assert radio_mj(LINK, t, wait_ms=4.0) == pytest.approx(expected_uj / 1000)
    with_tail = radio_mj(LINK, t, 4.0, EnergyModel(tail_share=0.5))
    assert with_tail - radio_mj(LINK, t, 4.0) == pytest.approx(0.5 * 1060.0 * 11576.0 / 1000)
    assert p.alpha_up_mw_per_mbps == 438.39 and p.beta_mw == 1288.04  # the published LTE figures


def test_cost_per_1000_from_price_throughput_and_bytes():
    prices = CloudPrices(instance_usd_per_hour=3.6, egress_usd_per_gb=0.1, ingress_usd_per_gb=0.0)
    assert compute_usd_per_1000(100.0, prices) == pytest.approx(0.01)  # $0.001/s ÷ 100/s × 1000
    half = CloudPrices(instance_usd_per_hour=3.6, utilisation=0.5)
    assert compute_usd_per_1000(100.0, half) == pytest.approx(0.02)
    assert bandwidth_usd_per_1000(up_bytes=5000, down_bytes=1_000_000, prices=prices) == pytest.approx(0.1)


def test_device_placement_is_the_scaled_whole_model(profile):
    dev = DeviceProfile("phone", speed_factor=4.0, watts=2.0)
    p = predict(DEVICE, LINK, profile, device=dev)
    assert p.latency_ms == pytest.approx(40.0) and p.network_ms == 0 and p.up_bytes == 0
    assert p.energy_mj == pytest.approx(80.0) and p.cost_usd_per_1000 == 0 and p.app_bytes == 4_000_000
    assert predict(DEVICE, NETWORKS["offline"], profile, device=dev).feasible


def test_cloud_placement_adds_transfer_overhead_and_server_time(profile):
    server = ServerProfile(speed_factor=0.5, overhead_ms=2.0)
    p = predict(CLOUD, LINK, profile, server=server)
    up, down = 9600 + REQUEST_OVERHEAD_BYTES, 200 + RESPONSE_OVERHEAD_BYTES
    assert (p.up_bytes, p.down_bytes) == (up, down)
    expected = 50.0 + up * 8 / 1000 + down * 8 / 8000 + 2.0 + 10.0 * 0.5
    assert p.latency_ms == pytest.approx(expected)
    assert p.device_ms == 0 and p.server_ms == pytest.approx(7.0) and p.app_bytes == 0
    # The server runs the whole model at 200 images/s × 2 (twice as fast as this machine).
    prices = CloudPrices()
    assert p.compute_usd_per_1000 == pytest.approx(1000 * prices.instance_usd_per_hour / 3600 / 400)
    assert not predict(CLOUD, NETWORKS["offline"], profile).feasible


def test_split_placement_runs_head_here_and_tail_there(profile):
    dev, server = DeviceProfile("d", 2.0, 1.0), ServerProfile(1.0, 1.0)
    p = predict(Placement.split(15), LINK, profile, device=dev, server=server)
    up = 800 + REQUEST_OVERHEAD_BYTES
    assert p.device_ms == pytest.approx(18.0) and p.server_ms == pytest.approx(2.0)
    assert p.latency_ms == pytest.approx(18.0 + 50.0 + up * 8 / 1000 + 500 * 8 / 8000 + 2.0)
    assert p.app_bytes == 15_000
    q = predict(Placement.split(15, int8=True), LINK, profile, device=dev, server=server)
    assert q.up_bytes == 200 + 8 + REQUEST_OVERHEAD_BYTES
    assert q.device_ms == pytest.approx((9.0 + 0.5) * 2) and q.server_ms == pytest.approx(1.0 + 1.0 + 0.25)
    with pytest.raises(InvalidRequest, match="k=4 is not a candidate"):
        predict(Placement.split(4), LINK, profile)


def test_placements_and_their_names_round_trip(profile):
    names = [p.name for p in placements(profile)]
    assert names == ["device", "split@15", "split@15+int8", "split@3", "split@3+int8", "cloud"]
    assert [Placement.parse(n).name for n in names] == names
    assert [p.name for p in placements(profile, int8_transfer=False)] == ["device", "split@15", "split@3", "cloud"]
    for bad in ("split@", "edge", "split@x"):
        with pytest.raises(InvalidRequest):
            Placement.parse(bad)


def test_decide_names_the_best_and_what_it_beats(profile):
    slow_phone = DeviceProfile("slow", 20.0, 2.0)  # 200 ms on the device
    fast_link = NetworkProfile("fast", 10.0, 100.0, 100.0)
    preds = [predict(p, fast_link, profile, device=slow_phone) for p in placements(profile)]
    d = decide(preds, "latency")
    assert d.best == "cloud" and d.device == pytest.approx(200.0)
    assert d.runner_up is not None and d.ratio is not None and d.ratio > 1
    assert d.best_split is not None and d.best_split_value is not None and d.best_split_value > d.value
    cost = decide(preds, "cost")
    assert cost.best == "device" and cost.value == 0 and cost.to_dict()["ratio"] is None
    offline = decide([predict(p, NETWORKS["offline"], profile) for p in placements(profile)], "latency")
    assert offline.best == "device" and offline.runner_up is None and offline.cloud is None


def test_choose_picks_what_the_hand_computed_latencies_say(profile):
    slow = DeviceProfile("slow", 20.0, 1.0)
    lat = {p.name: predict(p, LINK, profile, device=slow).latency_ms for p in placements(profile)}
    assert lat["device"] == pytest.approx(200.0)
    assert lat["cloud"] == pytest.approx(50 + 10_000 * 8 / 1000 + 500 * 8 / 8000 + 2 + 10)  # 142.5
    assert lat["split@3+int8"] == pytest.approx(2.5 * 20 + 50 + 10_408 * 8 / 1000 + 0.5 + 2 + 8 + 0.25)  # 194.1
    assert choose(profile, LINK, device=slow) == CLOUD
    assert choose(profile, LINK, device=DeviceProfile("same", 1.0, 1.0)) == DEVICE
    # On a LAN a 10× slower device gains by sending the 800-byte tensor after k=15 (94 ms vs 100 ms),
    # and choose() keeps to the placements the caller can run.
    lan = NetworkProfile("lan", 1.0, 1000.0, 1000.0)
    only = [DEVICE, Placement.split(15)]
    assert choose(profile, lan, candidates=only, device=DeviceProfile("x", 10.0, 1.0)) == Placement.split(15)
    assert choose(profile, lan, "energy", candidates=only, device=DeviceProfile("x", 10.0, 1.0)) in only


def test_advise_covers_every_network_and_objective_and_serialises_without_nan(profile):
    nets = [NETWORKS[n] for n in ("offline", "3g", "wifi")]
    advice = advise(profile, nets, device=DEVICES["midrange-phone"])
    assert set(advice.decisions) == {"offline", "3g", "wifi"}
    assert all(set(ds) == {"latency", "energy", "cost"} for ds in advice.decisions.values())
    data = json.loads(json.dumps(advice.to_dict(), allow_nan=False))
    assert data["predictions"]["offline"]["cloud"]["latency_ms"] is None
    assert ModelProfile.from_dict(data["profile"]) == profile
    with pytest.raises(InvalidRequest, match="distinct"):
        advise(profile, [NETWORKS["3g"], NETWORKS["3g"]])


def test_network_profiles_have_sources_and_parse_from_the_command_line():
    assert set(NETWORKS) == {"offline", "2g", "3g", "4g", "5g", "wifi"}
    assert all(n.source for n in NETWORKS.values())
    assert parse_network("4g") is NETWORKS["4g"]
    custom = parse_network("lte-edge:120:2:8:0.01")
    assert (custom.rtt_ms, custom.up_mbps, custom.down_mbps, custom.loss, custom.radio) == (120, 2, 8, 0.01, "lte")
    assert parse_network("wifi:5:100:100").radio == "wifi"  # an override keeps the profile's radio
    for bad, match in (("6g", "no network profile"), ("a:1:2", "expected"), ("a:x:1:1", "numbers"),
                       ("a:1:1:1:1.5", "probability"), ("a:1:0:1", "bandwidths")):
        with pytest.raises(InvalidRequest, match=match):
            parse_network(bad)
    live = NetworkProfile.live(rtt_ms=30, up_mbps=5)
    assert live.down_mbps == 5 and live.online


def test_device_profiles_are_overridable_and_calibrate_from_a_measurement():
    assert DEVICES["raspberry-pi-4"].speed_factor > DEVICES["midrange-phone"].speed_factor > 1
    phone = device_profile("midrange-phone", speed_factor=2.5, watts=4.0)
    assert (phone.speed_factor, phone.watts) == (2.5, 4.0)
    assert phone.calibrated(measured_ms=30.0, profiled_ms=10.0).speed_factor == pytest.approx(3.0)
    with pytest.raises(InvalidRequest, match="no device profile"):
        device_profile("toaster")
    with pytest.raises(InvalidRequest):
        DeviceProfile("x", 0.0, 1.0)


def test_every_placement_of_every_profile_is_finite_when_feasible(profile):
    for net in NETWORKS.values():
        for p in placements(profile):
            pred = predict(p, net, profile, device=DEVICES["raspberry-pi-4"])
            values = [pred.latency_ms, pred.energy_mj, pred.cost_usd_per_1000]
            assert all(math.isfinite(v) and v >= 0 for v in values) == pred.feasible
