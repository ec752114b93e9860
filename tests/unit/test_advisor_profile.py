"""Profiling a real (tiny) bundle and writing the report from it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tandem.advisor import NETWORKS, ModelProfile, advise
from tandem.advisor.devices import device_profile
from tandem.advisor.profiler import interleaved_ms, profile_bundle
from tandem.advisor.report import HTML_FILE, JSON_FILE, write
from tandem.bundle import Bundle
from tandem.testing.bundles import EMBED, H, W, make_bundle
from tests.unit.test_split_export import residual_bundle


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> ModelProfile:
    root = residual_bundle(tmp_path_factory.mktemp("profile") / "b")
    return profile_bundle(root, repeats=3, warmup=1, batch=4)


def test_profile_measures_every_candidate_cut_of_the_bundle(profiled):
    p = profiled
    assert [c.k for c in p.cuts] == [1, 2, 3, 4, 5, 9, 10, 11]
    assert p.input_bytes == H * W * 3 and p.output_bytes == 4 * (4 + EMBED)
    assert p.whole_ms > 0 and p.images_per_s > 0 and p.int8_ms is None and p.threads == 1
    assert p.compute_nodes == 16 and p.fp32_file_bytes > 0
    by_k = {c.k: c for c in p.cuts}
    half = ((H + 1) // 2, (W + 1) // 2)
    assert by_k[2].shape == [1, 3, H, W] and by_k[2].tensor_bytes == 3 * H * W * 4
    assert by_k[10].shape == [1, 8, *half] and by_k[10].int8_bytes == 8 * half[0] * half[1] + 8
    assert by_k[11].tensor_bytes == 8 * 4
    for c in p.cuts:
        assert c.head_ms > 0 and c.tail_ms > 0 and c.quantize_ms > 0
        assert c.head_file_bytes > 0 and c.head_peak_bytes > c.head_file_bytes
    # The live activations peak in the residual block: r1 and the 8-channel tensors beside it (fp32).
    assert p.peak_activation_bytes >= 3 * 8 * half[0] * half[1] * 4
    assert ModelProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_interleaved_timing_runs_each_part_once_per_round():
    calls: list[str] = []
    times = interleaved_ms([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and len(times) == 2 and all(t >= 0 for t in times)


def test_the_report_is_self_contained_with_every_network_and_objective(tmp_path, profiled):
    advice = advise(profiled, list(NETWORKS.values()), device=device_profile("raspberry-pi-4"))
    json_path, html_path = write(advice, tmp_path / "out", "tandem advise b")
    assert (json_path.name, html_path.name) == (JSON_FILE, HTML_FILE)
    data = json.loads(json_path.read_text())
    assert set(data["best"]) == set(NETWORKS) and data["command"] == "tandem advise b"
    assert data["best"]["offline"]["latency"]["best"] == "device"
    assert set(data["predictions"]["wifi"]) >= {"device", "cloud", "split@10", "split@10+int8"}
    page = html_path.read_text()
    assert page.count("<svg") == 6 and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "Huang et al." in page and "raspberry-pi-4" in page and "<script" not in page
    for net in NETWORKS:
        for obj in ("latency", "energy", "cost"):
            v = data["best"][net][obj]["value"]
            assert v is not None and math.isfinite(v)


def test_profile_of_a_bundle_with_an_int8_model_times_it_too(tmp_path):
    root = make_bundle(tmp_path / "b", None)
    # The tiny graph stands in for its own int8 model: what matters is that it is found and timed.
    b = Bundle.load(root)
    from tandem.bundle import write_manifest

    (root / "model.int8.onnx").write_bytes((root / "model.onnx").read_bytes())
    write_manifest(root, b.manifest.model_copy(update={"models": {"fp32": "model.onnx", "int8": "model.int8.onnx"}}))
    p = profile_bundle(root, repeats=2, warmup=0, batch=2)
    assert p.int8_ms is not None and p.int8_ms > 0 and p.int8_file_bytes == p.fp32_file_bytes
    assert [c.k for c in p.cuts] == list(range(1, 9))
    assert np.isclose(p.cuts[-1].tensor_bytes, EMBED * 4)


def test_runs_after_idling_are_measured_and_a_sporadic_device_pays_for_them(profiled):
    assert profiled.whole_idle_ms is not None and profiled.whole_idle_ms > 0
    assert profiled.idle_factor == pytest.approx(profiled.whole_idle_ms / profiled.whole_ms)
    phone = device_profile("midrange-phone")
    sporadic = phone.sporadic(1.5)
    assert sporadic.speed_factor == pytest.approx(1.5 * phone.speed_factor) and "sporadic" in sporadic.source
    older = {k: v for k, v in profiled.to_dict().items() if k != "whole_idle_ms"}  # advice.json before the field
    assert ModelProfile.from_dict(older).idle_factor == 1.0
