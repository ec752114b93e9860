"""The advisor's live-video arithmetic (tandem.advisor.video) on numbers small enough to check by hand."""

from __future__ import annotations

import json
import math

import pytest

from tandem.advisor import (
    CLOUD,
    DEVICE,
    CutProfile,
    DeviceProfile,
    ModelProfile,
    NetworkProfile,
    Placement,
    ServerProfile,
)
from tandem.advisor.energy import RADIO_POWER, stream_radio_mj
from tandem.advisor.frames import frame_files
from tandem.advisor.networks import NETWORKS
from tandem.advisor.report import fmt_video, html, video_shortfall
from tandem.advisor.video import FrameProfile, VideoSpec, advise_video, parse_resolution, predict_video, verdict
from tandem.errors import DataError, InvalidRequest
from tests.conftest import write_png

# 1 Mbps = 1,000 bits/ms: 25,000 bytes take 20 ms at 10 Mbps.
LINK = NetworkProfile("link", rtt_ms=50.0, up_mbps=10.0, down_mbps=20.0, loss=0.0, radio="lte")
FAST = NetworkProfile("lan", rtt_ms=1.0, up_mbps=1000.0, down_mbps=1000.0, loss=0.0, radio="wifi")
OFFLINE = NETWORKS["offline"]
DEV = DeviceProfile("dev", 1.0, 15.0)
SRV = ServerProfile(1.0, 2.0)
SPEC = VideoSpec(30, 640, 480)


@pytest.fixture()
def profile() -> ModelProfile:
    """A 10 ms model with one cut: head 4 ms, tail 6 ms, 100 kB crossing (25,008 B int8)."""
    cut = CutProfile(k=5, tensor="t", node="n", op="Conv", shape=[1, 25_000], tensor_bytes=100_000,
                     int8_bytes=25_008, head_ms=4.0, tail_ms=6.0, quantize_ms=0.5, dequantize_ms=0.25,
                     head_file_bytes=1000, head_peak_bytes=2000)
    return ModelProfile(
        bundle="b", name="m", version=1, machine="test", threads=1, repeats=1, input_bytes=921_600,
        output_bytes=921_600 * 4, whole_ms=10.0, int8_ms=None, images_per_s=100.0, batch=8, fp32_file_bytes=1000,
        int8_file_bytes=None, peak_activation_bytes=0, peak_bytes=0, rss_bytes=0, compute_nodes=10, cuts=[cut],
    )


@pytest.fixture()
def frames() -> FrameProfile:
    """JPEG frames of 24,600 B up (25,000 with the request's headers) and 24,700 B down (25,000 likewise)."""
    return FrameProfile(source="test", count=4, width=640, height=480, resized=False, quality=90, up_bytes=24_600,
                        answer="jpeg", down_bytes=24_700, encode_ms=1.0, decode_ms=2.0)


def test_resolutions_and_frame_rates_are_checked():
    assert parse_resolution("640x480") == (640, 480) and parse_resolution(" 1280 × 720 ") == (1280, 720)
    for bad in ("640by480", "640", "x480", "8x8", "640x5000"):
        with pytest.raises(InvalidRequest, match="resolution"):
            parse_resolution(bad)
    assert VideoSpec(25, 320, 240).budget_ms == 40.0 and SPEC.resolution == "640x480"
    for fps in (0, -1, 1000):
        with pytest.raises(InvalidRequest, match="frame rate"):
            VideoSpec(fps, 640, 480)


def test_the_device_runs_one_frame_at_a_time(profile, frames):
    p = predict_video(DEVICE, LINK, profile, frames, SPEC, device=DeviceProfile("phone", 4.0, 3.0))
    assert p.latency_ms == 40.0 and p.fps == 25.0 and p.bottleneck == "device"
    assert not p.meets_fps and not p.meets_budget and not p.live  # 30 fps needs 33.3 ms a frame
    assert p.delivered_fps == 25.0 and p.up_bytes == 0 and p.uplink_mbps == 0
    # 25 frames a second for a minute at 40 ms × 3 W = 120 mJ each: 180 J, no radio.
    assert p.energy_j_per_minute == pytest.approx(180.0) and p.radio_j_per_minute == 0
    assert p.energy_mj_per_frame == pytest.approx(120.0)
    fast = predict_video(DEVICE, OFFLINE, profile, frames, SPEC, device=DEV)
    assert fast.live and fast.fps == 100.0 and fast.delivered_fps == 30.0


def test_the_cloud_streams_at_its_slowest_stage_and_answers_after_all_of_them(profile, frames):
    p = predict_video(CLOUD, LINK, profile, frames, SPEC, device=DEV, server=SRV)
    # device: encode 1 + decode the answer 2 = 3 ms; up 25,000 B at 10 Mbps = 20 ms; down 25,000 B at 20 Mbps =
    # 10 ms; server: 2 overhead + decode 2 + model 10 + encode the answer 1 = 15 ms.
    assert (p.device_ms, p.server_ms, p.up_bytes, p.down_bytes) == (3.0, 15.0, 25_000, 25_000)
    assert p.bottleneck == "uplink" and p.fps == pytest.approx(50.0)
    assert p.latency_ms == pytest.approx(3 + 50 + 20 + 10 + 15) and p.network_ms == pytest.approx(80.0)
    assert p.meets_fps and not p.meets_budget and not p.live
    assert p.uplink_mbps == pytest.approx(6.0) and p.downlink_mbps == pytest.approx(6.0)  # 25 kB × 8 × 30
    # A minute at 30 fps: 1,800 frames; 3 ms × 15 W each; the LTE radio connected for 60 s, 360 Mbit each way.
    lte = RADIO_POWER["lte"]
    radio_j = lte.beta_mw * 60 / 1000 + (lte.alpha_up_mw_per_mbps + lte.alpha_down_mw_per_mbps) * 360 / 1000
    assert p.radio_j_per_minute == pytest.approx(radio_j)
    assert p.compute_j_per_minute == pytest.approx(1800 * 3 * 15 / 1000)
    assert p.energy_mj_per_frame == pytest.approx(p.energy_j_per_minute / 1800 * 1000)


def test_a_slow_uplink_caps_the_rate_and_delivered_frames_set_the_energy(profile, frames):
    slow = NetworkProfile("slow", rtt_ms=10.0, up_mbps=2.0, down_mbps=100.0, radio="lte")
    p = predict_video(CLOUD, slow, profile, frames, SPEC, device=DEV, server=SRV)
    assert p.bottleneck == "uplink" and p.fps == pytest.approx(10.0)  # 25,000 B at 2 Mbps: 100 ms
    assert not p.meets_fps and p.delivered_fps == pytest.approx(10.0) and p.uplink_mbps == pytest.approx(6.0)
    assert p.compute_j_per_minute == pytest.approx(600 * 3 * 15 / 1000)  # 10 fps: 600 frames a minute


def test_loss_costs_one_round_trip_per_frame_that_loses_a_packet(profile, frames):
    lossy = NetworkProfile("lossy", rtt_ms=50.0, up_mbps=10.0, down_mbps=20.0, loss=0.01, radio="lte")
    clean = predict_video(CLOUD, LINK, profile, frames, SPEC, device=DEV, server=SRV)
    p = predict_video(CLOUD, lossy, profile, frames, SPEC, device=DEV, server=SRV)
    packets = 2 * math.ceil(25_000 / 1448)
    assert p.latency_ms - clean.latency_ms == pytest.approx((1 - 0.99 ** packets) * 50.0)
    assert p.fps == clean.fps  # a stream's rate is its bandwidth's; loss delays frames


def test_a_split_sends_its_tensor_and_keeps_the_jpeg_answer(profile, frames):
    p = predict_video(Placement.split(5), FAST, profile, frames, SPEC, device=DEV, server=SRV)
    assert p.device_ms == 4.0 + 2.0 and p.server_ms == 2.0 + 6.0 + 1.0  # head + decode; overhead + tail + encode
    assert p.up_bytes == 100_400 and p.down_bytes == 25_000
    q = predict_video(Placement.split(5, int8=True), FAST, profile, frames, SPEC, device=DEV, server=SRV)
    assert q.device_ms == 6.5 and q.server_ms == 9.25 and q.up_bytes == 25_408
    with pytest.raises(InvalidRequest, match="not a candidate cut"):
        predict_video(Placement.split(7), FAST, profile, frames, SPEC)


def test_a_model_answering_tensors_costs_no_jpeg_work_coming_back(profile, frames):
    tensors = FrameProfile(**{**frames.to_dict(), "answer": "tensors", "down_bytes": 200})
    p = predict_video(CLOUD, LINK, profile, tensors, SPEC, device=DEV, server=SRV)
    assert p.device_ms == 1.0 and p.server_ms == 2.0 + 2.0 + 10.0 and p.down_bytes == 500


def test_offline_only_the_device_is_possible(profile, frames):
    p = predict_video(CLOUD, OFFLINE, profile, frames, SPEC)
    assert not p.feasible and p.fps == 0 and not p.live and p.to_dict()["latency_ms"] is None
    v = verdict([predict_video(pl, OFFLINE, profile, frames, SPEC) for pl in (DEVICE, CLOUD)], SPEC)
    assert v.recommended == "device" and v.live and v.best_split is None
    with pytest.raises(InvalidRequest, match="no placement is possible"):
        verdict([p], SPEC)


def test_the_verdict_takes_the_live_placement_on_the_least_energy_else_the_closest(profile, frames):
    # On a LAN the cloud keeps up too, and on less energy than a 15 W device running the model itself.
    both = [predict_video(pl, FAST, profile, frames, SPEC, device=DEV, server=SRV) for pl in (DEVICE, CLOUD)]
    assert all(p.live for p in both)
    v = verdict(both, SPEC)
    assert v.recommended == "cloud" and v.live and "least energy" in v.reason and "device also keeps up" in v.reason
    # On the test link only the device does.
    v = verdict([predict_video(pl, LINK, profile, frames, SPEC, device=DEV, server=SRV) for pl in (DEVICE, CLOUD)],
                SPEC)
    assert v.recommended == "device" and v.reason.startswith("the only placement that keeps 30 fps")
    # A device 20× slower: nothing keeps up; the most frames delivered wins — the cloud's 16.7 fps (its JPEG
    # work, 60 ms on this device, is its slowest stage) against the device's 5.
    slow = DeviceProfile("slow", 20.0, 3.0)
    preds = [predict_video(pl, LINK, profile, frames, SPEC, device=slow, server=SRV) for pl in (DEVICE, CLOUD)]
    assert preds[0].fps == pytest.approx(5.0) and preds[1].fps == pytest.approx(1000 / 60)
    v = verdict(preds, SPEC)
    assert v.recommended == "cloud" and not v.live and v.reason.startswith("no placement keeps 30 fps")
    assert "too few frames: 16.7 fps" in v.reason


def test_video_advice_covers_every_placement_and_network_and_round_trips_as_json(profile, frames, tmp_path):
    video = advise_video(profile, frames, SPEC, [OFFLINE, LINK, FAST], device=DEV, server=SRV)
    assert video.recommended == "device" and video.summary().startswith("device for live video at 30 fps, 640x480")
    d = json.loads(json.dumps(video.to_dict(), allow_nan=False))
    assert set(d) == {"fps", "width", "height", "budget_ms", "resolution", "frames", "recommended", "summary",
                      "networks"}
    assert set(d["networks"]["link"]["placements"]) == {"device", "split@5", "split@5+int8", "cloud"}
    assert set(d["networks"]["link"]["placements"]["cloud"]) == {
        "placement", "network", "feasible", "fps", "delivered_fps", "bottleneck", "latency_ms", "meets_fps",
        "meets_budget", "live", "device_ms", "server_ms", "network_ms", "up_bytes", "down_bytes", "uplink_mbps",
        "downlink_mbps", "energy_mj_per_frame", "energy_j_per_minute", "compute_j_per_minute", "radio_j_per_minute"}
    short = video.to_dict(every_split=False)["networks"]["link"]
    assert set(short["placements"]) == {"device", "cloud", short["best_split"]}
    assert advise_video(profile, frames, SPEC, [LINK], int8_transfer=False).verdicts["link"].best_split == "split@5"
    with pytest.raises(InvalidRequest, match="at least one network"):
        advise_video(profile, frames, SPEC, [])


def test_the_report_shows_the_video_verdicts_with_a_chart(profile, frames):
    from tandem.advisor import advise

    video = advise_video(profile, frames, SPEC, [LINK, OFFLINE], device=DEV, server=SRV)
    page = html(advise(profile, [LINK, OFFLINE], device=DEV, server=SRV), "tandem advise b --fps 30", video)
    assert "<h2>Live video</h2>" in page and "30 fps required" in page and page.count("<svg") >= 2
    cloud = video.prediction("link", "cloud")
    assert fmt_video(cloud) == "50.0 fps · 98 ms ✗" and video_shortfall(cloud) == "late"
    assert video_shortfall(video.prediction("link", "device")) == ""


def test_a_stream_keeps_the_radio_connected_and_pays_per_bit():
    wifi = RADIO_POWER["wifi"]
    # One second, 1 Mbit (125,000 B) up: β for 1 s plus α_up per Mbit; nothing offline.
    assert stream_radio_mj(FAST, 1000.0, 125_000, 0) == pytest.approx(wifi.beta_mw + wifi.alpha_up_mw_per_mbps)
    assert stream_radio_mj(OFFLINE, 60_000.0, 0, 0) == 0


def test_sample_frames_spread_over_a_folder(tmp_path):
    for i in range(10):
        (tmp_path / f"d{i % 2}").mkdir(exist_ok=True)
        write_png(tmp_path / f"d{i % 2}" / f"{i:02d}.png", seed=i)
    (tmp_path / ".hidden").mkdir()
    write_png(tmp_path / ".hidden" / "x.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    picked = frame_files(tmp_path, 5)
    assert len(picked) == 5 and len(set(picked)) == 5 and all(".hidden" not in p.parts for p in picked)
    assert len(frame_files(tmp_path, 100)) == 10
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no photos in it"):
        frame_files(empty)
    with pytest.raises(DataError, match="no such folder"):
        frame_files(tmp_path / "missing")
