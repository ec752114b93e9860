"""`tandem advise --fps` (issue 18): the advisor's live-video verdicts for a deep-art bundle, checked
against frame rates measured here — the model run back to back as the device would, and a real
server streamed to over an emulated 4G link (tandem.testing.streams)."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from tandem.advisor import NETWORKS
from tandem.advisor.frames import frame_files, measure_frames, model_size
from tandem.advisor.profiler import profile_bundle
from tandem.advisor.video import VideoSpec, advise_video
from tandem.bundle import Bundle
from tandem.bundle.runtime import load_session
from tandem.export.stylize_export import export_stylize_run
from tandem.testing.bundles import make_bundle
from tandem.testing.streams import StreamLink, stream
from tandem.training.stylize import StylizeConfig, train_stylize
from tests.integration.cli import tandem, tandem_json
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration
PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"]
STREAMED = "Donald_Rumsfeld"  # photos the advisor's evenly spread LFW sample is unlikely to hold


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, lfw_people) -> Path:
    """A deep-art bundle from a one-epoch run on a dozen 64×64 photos (as tests/integration/test_deepart.py)."""
    root = tmp_path_factory.mktemp("video")
    for name in PEOPLE:
        (root / "roll" / name).mkdir(parents=True)
        for src in sorted((lfw_people / name).glob("*.jpg"))[:4]:
            shutil.copy(src, root / "roll" / name / src.name)
    cfg = StylizeConfig(data=str(root / "roll"), out=root / "run", effect="detail", name="art", epochs=1,
                        batch_size=4, photo_size=64, crop=32)
    train_stylize(cfg, show_progress=False)
    return export_stylize_run(root / "run", root / "bundle").root


def _frames(lfw_people: Path, width: int, height: int, count: int) -> list[np.ndarray]:
    photos = sorted((lfw_people / STREAMED).glob("*.jpg"))[:count]
    out = []
    for p in photos:
        with Image.open(p) as img:
            out.append(np.asarray(ImageOps.fit(img.convert("RGB"), (width, height), Image.Resampling.BILINEAR)))
    return out


def test_the_device_keeps_25_fps_at_320x240_as_the_model_run_back_to_back_shows(bundle, lfw_people):
    b = Bundle.load(bundle)
    assert model_size(b.manifest, 320, 240) == (240, 320, False)  # a model of any size takes the frame as it is
    frames = measure_frames(b, frame_files(lfw_people, 8), 320, 240, source="LFW photos")
    assert frames.answer == "jpeg" and frames.count == 8 and (frames.width, frames.height) == (320, 240)
    assert 3_000 < frames.up_bytes < 60_000 and 3_000 < frames.down_bytes < 60_000
    profile = profile_bundle(bundle, repeats=5, size=(240, 320), idle=False)
    assert profile.input_bytes == 240 * 320 * 3
    video = advise_video(profile, frames, VideoSpec(25, 320, 240), [NETWORKS["offline"], NETWORKS["4g"]])
    device = video.prediction("offline", "device")

    # What the device placement does with a stream: one frame after another through the model.
    sess = load_session(b.model_path("fp32"), threads=1)
    pixels = [f[None] for f in _frames(lfw_people, 320, 240, 10)] * 4
    sess.run(None, {"pixels": pixels[0]})
    t0 = time.perf_counter()
    for x in pixels:
        sess.run(None, {"pixels": x})
    measured_fps = len(pixels) / (time.perf_counter() - t0)

    assert measured_fps >= 25 and device.meets_fps and device.live, (measured_fps, device)
    assert video.verdicts["offline"].recommended == "device" and video.verdicts["offline"].live
    # On 4G the cloud may carry 25 small frames a second, but each comes back after the frame budget.
    cloud = video.prediction("4g", "cloud")
    assert cloud.latency_ms > 40 and not cloud.live
    assert video.verdicts["4g"].recommended == "device" and video.recommended == "device"


def test_advise_fps_says_the_cloud_misses_25_fps_over_4g_at_640x480_and_a_stream_confirms_it(
        tmp_path, bundle, lfw_people, data_home):
    out = tmp_path / "advice"
    summary = tandem_json("advise", bundle, "--fps", "25", "--resolution", "640x480", "--network", "4g",
                          "--repeats", "3", "--sample-frames", "8", "--out", out,
                          env={"TANDEM_DATA_HOME": str(data_home)})
    video = summary["video"]
    assert (video["fps"], video["width"], video["height"], video["budget_ms"]) == (25, 640, 480, 40)
    assert video["frames"]["source"] == "LFW photos" and video["frames"]["answer"] == "jpeg"
    net = video["networks"]["4g"]
    assert set(net) == {"recommended", "live", "reason", "best_split", "placements"}
    assert set(net["placements"]) == {"device", "cloud", net["best_split"]}
    cloud = net["placements"]["cloud"]
    # 25 JPEG frames of 640×480 need more than 4G's 6.3 Mbit/s uplink, and 4G's round trip alone is 55 ms.
    # (On a busy machine the server, timed here, can be slower still.)
    assert cloud["uplink_mbps"] > 6.3 and cloud["bottleneck"] in {"uplink", "server"}
    assert not cloud["meets_fps"] and not cloud["meets_budget"] and not cloud["live"]
    assert cloud["fps"] < 25 and cloud["delivered_fps"] == pytest.approx(cloud["fps"])
    assert net["recommended"] != "cloud"
    saved = json.loads((out / "advice.json").read_text())["video"]
    assert len(saved["networks"]["4g"]["placements"]) >= 3 and saved["recommended"] == video["recommended"]
    assert "Live video" in (out / "report.html").read_text()

    # The same stream, measured: JPEG frames to the deepart app of a real server over an emulated 4G link.
    settings = test_settings(tmp_path / "home")
    keys = populate(settings, [bundle], production=None)
    jpegs = []
    for f in _frames(lfw_people, 640, 480, 12):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=video["frames"]["quality"])
        jpegs.append(buf.getvalue())
    headers = {"authorization": f"Bearer {keys.predict}", "content-type": "image/jpeg"}
    with running(settings) as server, httpx.Client(transport=StreamLink(NETWORKS["4g"]), base_url=server.url,
                                                   timeout=60, headers=headers) as http:
        first = http.post("/v1/apps/deepart/art:predict", content=jpegs[0])
        assert first.status_code == 200, first.text
        assert Image.open(io.BytesIO(first.content)).size == (640, 480)

        def send(frame: bytes) -> None:
            assert http.post("/v1/apps/deepart/art:predict", content=frame).status_code == 200

        measured = stream(send, jpegs * 2, in_flight=4)
    assert measured.fps < 25 and measured.latency_ms > 40, measured
    # No faster than 4G's uplink carries these frames; near the prediction, whose server time this shared
    # machine's load moves from one minute to the next (measured 0.7x of it under a load average of 7).
    uplink_fps = NETWORKS["4g"].up_mbps * 1e6 / 8 / (np.mean([len(j) for j in jpegs]) + 400)
    assert 0.4 * cloud["fps"] < measured.fps < 1.05 * uplink_fps, (measured, cloud["fps"], uplink_fps)


def test_advise_fps_on_a_classifier_sends_resized_frames_and_gets_tensors_back(tmp_path, lfw_people):
    tiny = make_bundle(tmp_path / "faces", None)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for src in sorted((lfw_people / STREAMED).glob("*.jpg"))[:4]:
        shutil.copy(src, frames_dir / src.name)
    out = tmp_path / "a"
    proc = tandem("advise", tiny, "--fps", "30", "--network", "wifi", "--network", "offline", "--repeats", "2",
                  "--frames", frames_dir, "--sample-frames", "4", "--no-progress", "--out", out)
    assert "live video" in proc.stdout and "device for live video at 30 fps, 640x480" in proc.stdout
    assert len(proc.stdout.splitlines()) < 40
    video = json.loads((out / "advice.json").read_text())["video"]
    frames = video["frames"]
    assert frames["resized"] and (frames["width"], frames["height"]) == (75, 100) and frames["count"] == 4
    assert frames["answer"] == "tensors" and frames["down_bytes"] == 4 * (4 + 32)  # probabilities + embedding
    assert video["networks"]["offline"]["placements"]["device"]["live"]
    assert video["networks"]["offline"]["placements"]["cloud"]["feasible"] is False
    assert {"split@5", "split@5+int8"} <= set(video["networks"]["wifi"]["placements"])
    html = (out / "report.html").read_text()
    assert "Live video" in html and "30 fps required" in html


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--fps", "30", "--resolution", "640by480"], 7, "give WIDTHxHEIGHT in pixels"),
    (["--fps", "30", "--sporadic"], 7, "a video's frames come back to back"),
    (["--fps", "30", "--frames", "/nonexistent/frames"], 3, "pass --frames DIR"),
])
def test_bad_video_options_are_refused_before_any_profiling(tmp_path, args, code, message):
    tiny = make_bundle(tmp_path / "faces", None)
    proc = tandem("advise", tiny, *args, "--out", tmp_path / "a", ok=False)
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    assert not (tmp_path / "a").exists()
