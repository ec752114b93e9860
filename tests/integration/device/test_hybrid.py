"""HybridModel against a real server on a free port: parity, routing per policy, failover, metadata."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tandem.bundle import Bundle
from tandem.device.cloud_client import CircuitBreaker, CircuitOpen, CloudClient
from tandem.device.hybrid import HybridModel, NothingAvailable
from tandem.errors import ConfigError, NotFound, ServerUnreachable, Unauthenticated
from tandem.testing.processes import free_port

pytestmark = pytest.mark.integration


def cloud_of(srv, keys, **kw) -> CloudClient:  # type: ignore[no-untyped-def]
    return CloudClient(srv.url, "faces", api_key=keys.predict, **kw)


def dead_cloud(**kw) -> CloudClient:  # type: ignore[no-untyped-def]
    return CloudClient(f"http://127.0.0.1:{free_port()}", "faces", api_key="k", retries=0, **kw)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_parity_device_and_cloud_on_lfw(server, device_bundle: Path, lfw_photos: list[Path], binary: bool) -> None:
    srv, keys = server
    with cloud_of(srv, keys, binary=binary) as cloud:
        hm = HybridModel(device_bundle, cloud, version=1)
        dev = hm.predict(lfw_photos, policy="only_device")
        cl = hm.predict(lfw_photos, policy="only_cloud")
    assert (dev.where, cl.where) == ("device", "cloud")
    assert dev.probabilities.shape == (len(lfw_photos), 4)
    for out in ("probabilities", "embedding"):
        assert dev.outputs[out].dtype == cl.outputs[out].dtype == np.float32
        assert np.abs(dev.outputs[out] - cl.outputs[out]).max() <= 1e-4
    assert (dev.probabilities.argmax(1) == cl.probabilities.argmax(1)).all()
    assert [g[0].label for g in dev.top_k(1)] == [g[0].label for g in cl.top_k(1)]


def test_every_image_form_gives_the_same_tensor(server, device_bundle: Path, lfw_photos: list[Path]) -> None:
    hm = HybridModel(device_bundle, policy="only_device")
    photo = lfw_photos[0]
    arr = np.asarray(Image.open(photo).convert("RGB"))
    forms = [photo, str(photo), photo.read_bytes(), Image.open(photo), arr]
    probs = [hm.predict(f).probabilities for f in forms]
    for p in probs[1:]:
        np.testing.assert_array_equal(p, probs[0])
    # raw tensors: the preprocessed pixels, by input name
    spec = Bundle.load(device_bundle).manifest.preprocessing
    from tandem.bundle.preprocess import decode_image, to_input
    pixels = to_input(decode_image(photo), spec)[None]
    np.testing.assert_array_equal(hm.predict({"pixels": pixels}).probabilities, probs[0])


def test_result_metadata(server, device_bundle: Path, lfw_photos: list[Path]) -> None:
    srv, keys = server
    with cloud_of(srv, keys) as cloud:
        hm = HybridModel(device_bundle, cloud, version=1, policy="prefer_cloud")
        cl = hm.predict(lfw_photos[:3])
        dev = hm.predict(lfw_photos[:3], policy="prefer_device")
    assert (cl.where, cl.model, cl.version, cl.policy, cl.fallback) == ("cloud", "faces", 1, "prefer_cloud", None)
    assert (dev.where, dev.model, dev.version, dev.policy) == ("device", "faces", 1, "prefer_device")
    for r in (cl, dev):
        t = r.timings
        assert t.preprocess_ms > 0 and t.network_ms >= 0 and t.total_ms >= t.preprocess_ms
    assert cl.timings.network_ms > 0 and cl.timings.inference_ms is None  # the round trip holds the remote run
    assert dev.timings.network_ms == 0 and dev.timings.inference_ms is not None and dev.timings.inference_ms > 0
    assert cl.labels == dev.labels and dev.labels is not None and "Tony_Blair" in dev.labels


def test_prefer_cloud_falls_back_to_device_when_server_is_down(device_bundle: Path, lfw_photos: list[Path]) -> None:
    with dead_cloud() as cloud:
        hm = HybridModel(device_bundle, cloud, policy="prefer_cloud")
        start = time.perf_counter()
        r = hm.predict(lfw_photos[:2])
        assert time.perf_counter() - start < 2.0  # within the connect timeout
    assert r.where == "device" and r.fallback is not None and "cannot connect" in r.fallback


def test_only_cloud_with_server_down_is_a_clear_error_and_the_breaker_then_fails_fast(
        device_bundle: Path, lfw_photos: list[Path]) -> None:
    with dead_cloud(breaker=CircuitBreaker(failures=1, cooldown_s=60)) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="only_cloud")
        with pytest.raises(ServerUnreachable, match="cannot connect"):
            hm.predict(lfw_photos[:1])
        with pytest.raises(CircuitOpen, match="circuit breaker open"):
            hm.predict(lfw_photos[:1])


def test_a_hanging_server_costs_one_timeout_then_fails_fast(blackhole: str, device_bundle: Path,
                                                            lfw_photos: list[Path]) -> None:
    with CloudClient(blackhole, "faces", timeout_s=0.3, connect_timeout_s=0.3,
                     breaker=CircuitBreaker(failures=1, cooldown_s=60)) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="prefer_cloud")
        start = time.perf_counter()
        first = hm.predict(lfw_photos[:1])
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = hm.predict(lfw_photos[:1])
        second_s = time.perf_counter() - start
    assert first.where == second.where == "device"
    assert 0.3 <= first_s < 1.5  # one read timeout, not retried (an infer POST is not idempotent)
    assert second_s < 0.1 and "circuit breaker open" in (second.fallback or "")


def test_prefer_device_uses_cloud_without_a_local_model(server, device_bundle: Path, lfw_photos: list[Path]) -> None:
    srv, keys = server
    spec = Bundle.load(device_bundle).manifest.preprocessing
    with cloud_of(srv, keys) as cloud:
        hm = HybridModel(None, cloud, preprocessing=spec)
        r = hm.predict(lfw_photos[:2])
        assert (r.where, r.fallback) == ("cloud", None)  # a cloud-only model: the cloud is no fallback
        with pytest.raises(ConfigError, match="no local model"):
            hm.predict(lfw_photos[:1], policy="only_device")
        # a missing bundle folder is no usable local model either
        hm2 = HybridModel(device_bundle.parent / "nowhere", cloud, preprocessing=spec)
        r = hm2.predict(lfw_photos[:1])
        assert r.where == "cloud" and "no such bundle folder" in (r.fallback or "")  # one was given: say why not


def test_neither_side_is_a_clear_error(device_bundle: Path, lfw_photos: list[Path]) -> None:
    spec = Bundle.load(device_bundle).manifest.preprocessing
    with dead_cloud() as cloud:
        hm = HybridModel(None, cloud, preprocessing=spec, policy="prefer_cloud")
        with pytest.raises(NothingAvailable, match=r"cannot connect.*no local model"):
            hm.predict(lfw_photos[:1])
    with pytest.raises(ConfigError, match="preprocessing="):
        HybridModel(None, None).predict(lfw_photos[:1])


def test_auto_measures_both_sides_then_picks_the_faster(server, device_bundle: Path, lfw_photos: list[Path]) -> None:
    srv, keys = server
    with cloud_of(srv, keys) as cloud:
        hm = HybridModel(device_bundle, cloud, policy="auto")
        wheres = [hm.predict(lfw_photos[:1]).where for _ in range(6)]
    assert set(wheres[:2]) == {"device", "cloud"}  # each side measured once
    faster = min(hm.auto.ewma, key=hm.auto.ewma.get)  # type: ignore[attr-defined]
    assert wheres[2:] == [faster] * 4


def test_cloud_errors_are_mapped(server, device_bundle: Path, lfw_photos: list[Path]) -> None:
    srv, keys = server
    with CloudClient(srv.url, "faces", api_key=keys.revoked) as cloud:
        with pytest.raises(Unauthenticated, match="HTTP 401"):
            cloud.infer({"pixels": np.zeros((1, 100, 75, 3), np.uint8)})
        assert cloud.breaker.state == "closed"  # a refusal is an answer, not an outage
    with cloud_of(srv, keys) as cloud:
        cloud.model = "nosuch"
        with pytest.raises(NotFound, match="HTTP 404"):
            cloud.metadata()


def test_metadata_and_health(server) -> None:
    srv, keys = server
    with cloud_of(srv, keys, version="production") as cloud:
        meta = cloud.metadata()
        assert meta["name"] == "faces" and [i["name"] for i in meta["inputs"]] == ["pixels"]
        assert cloud.ready()
        r = cloud.infer({"pixels": np.zeros((2, 100, 75, 3), np.uint8)}, outputs=["embedding"])
        assert list(r.outputs) == ["embedding"] and r.outputs["embedding"].shape == (2, 32) and r.version == 1
    with dead_cloud() as cloud:
        assert not cloud.ready()


@pytest.mark.parametrize("version", [None, 1, "production"])
def test_tfserving_flavour_matches_oip(server, device_bundle: Path, lfw_photos: list[Path], version) -> None:
    srv, keys = server
    with cloud_of(srv, keys, protocol="tfserving", version=version) as tf, cloud_of(srv, keys) as oip:
        a = HybridModel(device_bundle, tf, policy="only_cloud").predict(lfw_photos[:3])
        b = HybridModel(device_bundle, oip, policy="only_cloud").predict(lfw_photos[:3])
    assert (a.where, a.model, a.version) == ("cloud", "faces", 1)
    assert np.abs(a.probabilities - b.probabilities).max() <= 1e-6


def test_updater_without_an_installed_version_falls_back_to_cloud(server, tmp_path: Path, device_bundle: Path,
                                                                   lfw_photos: list[Path]) -> None:
    from tandem.device import DownloadConditions, ModelUpdater
    from tandem.security.signing import SigningKey

    srv, keys = server
    spec = Bundle.load(device_bundle).manifest.preprocessing
    updater = ModelUpdater(srv.url, keys.device, "faces", trusted_keys=[SigningKey.generate().public],
                           store_dir=tmp_path / "store", retries=0)
    with updater, cloud_of(srv, keys) as cloud:
        hm = HybridModel(updater, cloud, preprocessing=spec, update_conditions=DownloadConditions())
        assert updater.wait_background(30)  # started by HybridModel; this server has no OTA release for it
        r = hm.predict(lfw_photos[:1])
        assert r.where == "cloud" and "no version of faces is installed" in (r.fallback or "")
        with pytest.raises(ConfigError, match="not downloaded"):
            hm.predict(lfw_photos[:1], policy="only_device")
