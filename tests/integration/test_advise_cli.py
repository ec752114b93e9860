"""`tandem advise` and `tandem split` through the real command line, against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.bundle import Bundle
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
])
def test_bad_options_are_refused_with_a_clear_message(bundle, args, code, message):
    proc = tandem("advise", bundle, *args, ok=False)
    assert proc.returncode == code and message in proc.stderr


def test_a_missing_bundle_is_a_bundle_error(tmp_path):
    proc = tandem("advise", tmp_path / "nothing", ok=False)
    assert proc.returncode == 5 and "no such bundle folder" in proc.stderr
    proc = tandem("split", tmp_path / "nothing", "3", ok=False)
    assert proc.returncode == 5
