"""Split inference from the device SDK against a real server: the head here, the tail there, with
parity to the whole model on real LFW photos, int8 transfer, version pinning, fallback, and ``auto``
choosing among device, cloud and splits with the advisor's rule."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tandem.advisor.profiler import profile_bundle
from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tandem.device.advisor_rule import AdvisorRule
from tandem.device.cloud_client import CloudClient
from tandem.device.hybrid import HybridModel
from tandem.export.split import split_bundle
from tandem.testing.bundles import make_bundle
from tandem.testing.processes import free_port
from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split_bundles(tmp_path_factory, lfw_photos) -> tuple[Path, Path]:
    """Versions 1 and 2 of 'faces' (different weights), each cut at k=5 and k=7."""
    root = tmp_path_factory.mktemp("dsplit")
    out = []
    for seed in (1, 2):
        b = make_bundle(root / f"v{seed}", None, seed=seed)
        split_bundle(b, [5, 7], OnnxModel.open(Bundle.load(b)).pixels_from_files(lfw_photos[:4]))
        out.append(b)
    return out[0], out[1]


@pytest.fixture(scope="module")
def split_server(tmp_path_factory, split_bundles):
    settings = test_settings(tmp_path_factory.mktemp("dshome"))
    keys = populate(settings, list(split_bundles))  # production → v1
    with running(settings) as srv:
        yield srv, keys


def cloud_of(split_server, **kw) -> CloudClient:  # type: ignore[no-untyped-def]
    srv, keys = split_server
    return CloudClient(srv.url, "faces", api_key=keys.predict, **kw)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_split_equals_the_whole_model_on_lfw(split_server, split_bundles, lfw_photos, binary):
    with cloud_of(split_server, binary=binary) as cloud:
        hm = HybridModel(split_bundles[0], cloud, version=1)
        whole = hm.predict(lfw_photos, policy="only_device")
        for k in (5, 7):
            got = hm.predict(lfw_photos, policy=f"split@{k}")
            assert (got.where, got.placement, got.model, got.version, got.fallback) == (
                "split", f"split@{k}", "faces", 1, None)
            for out in ("probabilities", "embedding"):
                assert got.outputs[out].dtype == np.float32
                assert np.abs(got.outputs[out] - whole.outputs[out]).max() <= 1e-4
            t = got.timings
            assert t.preprocess_ms > 0 and t.inference_ms is not None and t.inference_ms > 0 and t.network_ms > 0
            assert t.total_ms >= t.preprocess_ms + t.inference_ms + t.network_ms - 1e-6
            assert got.labels == whole.labels


def test_int8_transfer_keeps_the_answer(split_server, split_bundles, lfw_photos):
    with cloud_of(split_server) as cloud:
        hm = HybridModel(split_bundles[0], cloud, version=1)
        whole = hm.predict(lfw_photos, policy="only_device")
        got = hm.predict(lfw_photos, policy="split@5+int8")
    assert (got.where, got.placement) == ("split", "split@5+int8")
    assert (got.probabilities.argmax(1) == whole.probabilities.argmax(1)).all()
    assert np.abs(got.outputs["embedding"] - whole.outputs["embedding"]).max() < 0.05


def test_the_tail_comes_from_the_heads_version(split_server, split_bundles, lfw_photos):
    """The device runs v2's head while production still points at v1: it must get v2's tail."""
    with cloud_of(split_server) as cloud:
        hm = HybridModel(split_bundles[1], cloud, version=2)
        whole = hm.predict(lfw_photos[:3], policy="only_device")
        got = hm.predict(lfw_photos[:3], policy="split@7")
    assert got.version == 2
    assert np.abs(got.outputs["embedding"] - whole.outputs["embedding"]).max() <= 1e-4


def test_split_falls_back_to_the_device(split_bundles, lfw_photos):
    with CloudClient(f"http://127.0.0.1:{free_port()}", "faces", api_key="k", retries=0) as dead:
        hm = HybridModel(split_bundles[0], dead, version=1)
        got = hm.predict(lfw_photos[:2], policy="split@5")
        assert got.where == "device" and got.placement == "device" and "split@5" in (got.fallback or "")
        missing = hm.predict(lfw_photos[:2], policy="split@6")
    assert missing.where == "device" and "no split at k=6" in (missing.fallback or "")
    with pytest.raises(Exception, match="split@K"):
        hm.predict(lfw_photos[:1], policy="split@x")


def test_auto_with_the_advisor_rule_calibrates_measures_and_decides(split_server, split_bundles, lfw_photos):
    profile = profile_bundle(split_bundles[0], repeats=3, warmup=1, batch=2)
    rule = AdvisorRule(profile)
    with cloud_of(split_server) as cloud:
        hm = HybridModel(split_bundles[0], cloud, version=1, policy="auto", auto=rule)
        whole = hm.predict(lfw_photos[:1], policy="only_device")
        results = [hm.predict(lfw_photos[:1]) for _ in range(12)]
    assert rule.decisions[:2] == ["device", "cloud"]  # calibrate the device, then measure the link
    assert rule.speed is not None and rule.speed > 0 and rule.link() is not None
    for r in results:
        assert r.placement in {"device", "cloud", "split@5", "split@5+int8", "split@7", "split@7+int8"}
        assert (r.probabilities.argmax(1) == whole.probabilities.argmax(1)).all()
    # On loopback (sub-millisecond round trips, a tiny model) every placement is close; the rule settles.
    assert len(set(rule.decisions[-5:])) <= 2


class Recorded(httpx.HTTPTransport):
    """A real transport that writes down every request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


def test_auto_offers_only_the_splits_whose_tail_the_server_has(server, split_server, split_bundles, lfw_photos):
    """``server`` serves faces without splits: auto asks once per tail and sends no split request;
    ``split_server`` has the tails of v1 at k=5 and k=7, which auto then offers."""
    srv, keys = server
    transport = Recorded()
    with CloudClient(srv.url, "faces", api_key=keys.predict, transport=transport) as cloud:
        hm = HybridModel(split_bundles[0], cloud, version=1, policy="auto")
        assert hm.split_placements() == ["split@5", "split@5+int8", "split@7", "split@7+int8"]
        results = [hm.predict(lfw_photos[:1]) for _ in range(8)]
    assert {r.placement for r in results} == {"device", "cloud"} and all(r.fallback is None for r in results)
    assert not [s for s in transport.seen if ".tail." in s and s.endswith("/infer")]
    asked = [s for s in transport.seen if ".tail." in s]
    assert sorted(asked) == ["GET /v2/models/faces.tail.5/versions/1", "GET /v2/models/faces.tail.7/versions/1"]
    with cloud_of(split_server) as cloud:
        hm = HybridModel(split_bundles[0], cloud, version=1, policy="auto")
        assert [p.name for p in hm.candidates()] == [
            "device", "cloud", "split@5", "split@5+int8", "split@7", "split@7+int8"]
        assert {hm.predict(lfw_photos[:1]).placement for _ in range(6)} >= {"split@5", "split@7"}


def test_threads_reach_the_model_and_its_split_heads(split_server, split_bundles, lfw_photos):
    with cloud_of(split_server) as cloud:
        hm = HybridModel(split_bundles[0], cloud, version=1, threads=1)
        assert hm.predict(lfw_photos[:1], policy="split@5").where == "split"
        local = hm._device()
        opts = [local.model.session.get_session_options(), local.heads[5].get_session_options()]
    assert [o.intra_op_num_threads for o in opts] == [1, 1]
