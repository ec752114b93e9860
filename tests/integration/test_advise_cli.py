"""`tandem advise` and `tandem split` through the real command line, against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.bundle import Bundle
from tandem.registry.registry import Registry
from tandem.testing.bundles import make_bundle
from tests.integration.cli import tandem, tandem_json
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("advise") / "faces", None)


@pytest.fixture(scope="module")
def served(tmp_path_factory, bundle):
    settings = test_settings(tmp_path_factory.mktemp("home"))
    keys = populate(settings, [bundle])
    with running(settings) as server:
        yield server, keys


def test_advise_measures_the_server_and_the_link_and_writes_the_report(tmp_path, bundle, served):
    server, keys = served
    out = tmp_path / "advice"
    summary = tandem_json("advise", bundle, "--device-profile", "midrange-phone", "--network", "4g",
                          "--network", "lan:1:1000:1000", "--server-url", server.url, "--measure", server.url,
                          "--api-key", keys.predict, "--repeats", "3", "--out", out)
    assert Path(summary["report"]) == out / "report.html" and Path(summary["advice"]) == out / "advice.json"
    assert set(summary["best"]) == {"4g", "lan", "measured"}
    assert summary["splits_written"] == []
    data = json.loads((out / "advice.json").read_text())
    assert data["server"]["source"].startswith(f"measured against {server.url}")
    measured = data["networks"]["measured"]
    assert measured["rtt_ms"] > 0 and measured["up_mbps"] > 0 and "measured against" in measured["source"]
    assert data["device"]["name"] == "midrange-phone"
    assert {"device", "cloud", "split@5", "split@5+int8"} <= set(data["predictions"]["lan"])
    assert "<svg" in (out / "report.html").read_text()
    # A phone: app size and updates counted on Android; full update sizes from the bundle alone.
    assert data["app_size"]["platform"] == "android" and data["updates"]["source"] == "bundle"
    assert summary["recommended"]["4g"]["placement"] == summary["best"]["4g"]["latency"]["best"]


def test_advise_reports_app_size_and_updates_measured_from_the_registry_and_weighs_them(tmp_path, bundle):
    home = tmp_path / "home"
    with Registry.open(test_settings(home)) as reg:
        reg.push(bundle)
        reg.push(make_bundle(tmp_path / "v2", None, seed=2))
    out = tmp_path / "advice"
    summary = tandem_json("advise", bundle, "--network", "4g", "--network", "offline", "--repeats", "2",
                          "--registry-model", "faces", "--weights", "latency=1,size=1,updates=1", "--platform", "ios",
                          "--out", out, env={"TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": ""})
    onnx = Bundle.load(bundle).manifest.files["model.onnx"].size
    size = summary["app_size"]
    assert size["platform"] == "ios" and set(size["platforms"]) == {"android", "ios", "web", "linux"}
    assert size["platforms"]["ios"]["onnx-fp32"]["model_bytes"] == onnx
    assert size["runtimes"]["android"]["litert"]["basis"] == "published"
    assert size["runtimes"]["linux"]["onnx"]["basis"] == "measured"
    updates = summary["updates"]
    assert (updates["source"], updates["from_version"], updates["to_version"]) == ("registry", 1, 2)
    onnx_update = updates["variants"]["onnx-fp32"]
    assert 0 < onnx_update["delta_bytes"] < onnx_update["full_bytes"] and onnx_update["files"]["model.onnx"]["kind"] == "onnx"
    latency = updates["latency"]
    assert latency["app_store"]["ios"]["review_s"] == 86400 and latency["ota"]["networks"]["offline"] is None
    assert latency["ota"]["networks"]["4g"]["expected_s"] > latency["alias"]["expected_s"] > 0
    assert summary["weights"]["updates"] == pytest.approx(1 / 3)
    assert summary["recommended"]["offline"]["placement"] == "device"
    assert set(summary["recommended"]["4g"]["scored"]["device"]["values"]) == {"latency", "size", "updates"}
    data = json.loads((out / "advice.json").read_text())
    assert data["updates"] == updates and data["app_size"] == size
    page = (out / "report.html").read_text()
    for text in ("App size and updates", "Bytes per update over the air", "measured between versions 1 and 2",
                 "Update latency", "Recommended placement, weighed"):
        assert text in page


def test_advise_prints_a_one_screen_summary(tmp_path, bundle):
    proc = tandem("advise", bundle, "--network", "offline", "--network", "3g", "--network", "wifi", "--repeats", "2",
                  "--no-progress", "--out", tmp_path / "a")
    assert "best placement per network" in proc.stdout
    for word in ("offline", "3g", "wifi", "device", "report:"):
        assert word in proc.stdout
    assert len(proc.stdout.splitlines()) < 40


def test_split_lists_the_candidates_then_cuts_the_bundle(tmp_path, bundle):
    copy = make_bundle(tmp_path / "b", None)
    listed = tandem_json("split", copy)
    assert [c["k"] for c in listed["cuts"]] == list(range(1, 9)) and listed["compute_nodes"] == 11
    assert tandem_json("split", copy, "5", "7")["splits"][0]["tensor"]["name"] == "pooled"
    assert [s.k for s in Bundle.load(copy).manifest.splits] == [5, 7]
    assert "split k=5: head_5.onnx (device) → pooled" in tandem("info", copy).stdout


def test_advise_can_write_the_best_splits_into_the_bundle(tmp_path):
    copy = make_bundle(tmp_path / "b", None)
    # A device far slower than this machine, a fast LAN and a slow uplink: splits have a chance somewhere.
    summary = tandem_json("advise", copy, "--speed-factor", "200", "--network", "lan:0.5:1000:1000",
                          "--network", "slow-up:5:0.2:50", "--repeats", "2", "--split-best", "--out", tmp_path / "a")
    best = [d["best"] for ds in summary["best"].values() for d in ds.values()]
    expected = sorted({int(b.split("@")[1].split("+")[0]) for b in best if b.startswith("split@")})
    assert summary["splits_written"] == expected
    assert [s.k for s in Bundle.load(copy).manifest.splits] == expected


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--network", "6g"], 7, "no network profile '6g'"),
    (["--device-profile", "toaster"], 7, "no device profile 'toaster'"),
    (["--network", "x:1:0:1"], 7, "bandwidths > 0"),
    (["--weights", "speed=1"], 7, "unknown objective 'speed'"),
    (["--weights", "latency=0"], 7, "at least one weight must be > 0"),
    (["--platform", "windows"], 7, "no platform 'windows'"),
])
def test_bad_options_are_refused_with_a_clear_message(bundle, args, code, message):
    proc = tandem("advise", bundle, *args, ok=False)
    assert proc.returncode == code and message in proc.stderr


def test_a_missing_bundle_is_a_bundle_error(tmp_path):
    proc = tandem("advise", tmp_path / "nothing", ok=False)
    assert proc.returncode == 5 and "no such bundle folder" in proc.stderr
    proc = tandem("split", tmp_path / "nothing", "3", ok=False)
    assert proc.returncode == 5
