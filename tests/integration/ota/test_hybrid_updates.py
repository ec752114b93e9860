"""HybridModel over a ModelUpdater against a real `tandem serve`: a model damaged on the device's
storage falls back to the cloud (saying why) and is downloaded again; background updates wait
for the download conditions, and the next predict runs the version they installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tandem.device import CloudClient, DeviceConditions, DownloadConditions, HybridModel, ModelUpdater
from tandem.errors import ChecksumError
from tests.integration.ota.conftest import OnV1, OtaServer

pytestmark = pytest.mark.integration
PIXELS = {"pixels": np.random.default_rng(1).integers(0, 256, (2, 100, 75, 3), dtype=np.uint8)}


@pytest.fixture(scope="module")
def predict_key(ota_server: OtaServer) -> str:
    return ota_server.cli("keys", "create", "--scope", "predict", "--label", "hybrid")["key"]


def damage(store: Path, version: int, how: str) -> Path:
    """Damage the stored (encrypted) model file of ``version`` as a failing flash chip or an
    interrupted copy would."""
    path = store / "faces" / "versions" / str(version) / "model.onnx.tde"
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 3]))
    else:
        path.unlink()
    return path


def on_v2(ota_server: OtaServer, store: Path) -> None:
    """A new device that installed the newest release, v2 (and nothing before it)."""
    with ota_server.updater(store) as u:
        assert u.get_model("latest").version == 2 and u.installed_version() == 2


@pytest.mark.parametrize("how", ["flipped", "truncated", "missing"])
def test_a_damaged_model_falls_back_to_the_cloud_and_the_next_update_downloads_it_again(
        ota_server: OtaServer, predict_key: str, tmp_path: Path, how: str) -> None:
    store = tmp_path / "store"
    on_v2(ota_server, store)
    damage(store, 2, how)
    with ota_server.updater(store) as u, CloudClient(ota_server.url, "faces", version=2, api_key=predict_key) as cloud:
        hm = HybridModel(u, cloud)
        r = hm.predict(PIXELS)
        assert (r.where, r.version) == ("cloud", 2)
        assert r.fallback is not None and "v2 of faces, installed on this device, cannot be opened" in r.fallback
        with pytest.raises(ChecksumError, match=r"cannot be opened .*downloads it again"):
            hm.predict(PIXELS, policy="only_device")
        assert u.load_failures == 1  # the failure is kept, not met again at every call

        result = u.update()
        assert (result.status, result.version) == ("installed", 2) and result.downloaded_bytes > 0
        assert result.sources["model.onnx"] == "full"
        assert u.store.damaged("faces", 2) == []
        fixed = hm.predict(PIXELS, policy="only_device")
        cl = hm.predict(PIXELS, policy="only_cloud")
    assert (fixed.where, fixed.version, fixed.fallback) == ("device", 2, None)
    assert np.abs(fixed.probabilities - cl.probabilities).max() <= 1e-4


def test_with_a_kept_previous_version_the_device_runs_it_until_the_repair(
        ota_server: OtaServer, on_v1: OnV1, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(on_v1.store, store)
    with ota_server.updater(store) as u:
        assert u.update().version == 2
        damage(store, 2, "flipped")
        hm = HybridModel(u)
        assert [hm.predict(PIXELS).version for _ in range(3)] == [1, 1, 1]  # the rollback target, loaded once
        assert u.load_failures == 1
        result = u.update()
        assert (result.status, result.version, result.sources["model.onnx"]) == ("installed", 2, "delta")
        assert hm.predict(PIXELS).version == 2


def test_latest_repairs_a_damaged_model(ota_server: OtaServer, tmp_path: Path) -> None:
    store = tmp_path / "store"
    on_v2(ota_server, store)
    damage(store, 2, "flipped")
    with ota_server.updater(store) as u:
        with pytest.raises(ChecksumError, match="does not match what was installed"):
            u.get_model("local")
        assert u.get_model("latest").version == 2
        assert u.store.damaged("faces", 2) == []


def test_a_hybrid_model_with_update_conditions_repairs_in_the_background(
        ota_server: OtaServer, predict_key: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    on_v2(ota_server, store)
    with ota_server.updater(store) as u, CloudClient(ota_server.url, "faces", version=2, api_key=predict_key) as cloud:
        hm = HybridModel(u, cloud, update_conditions=DownloadConditions())
        assert u.wait_background(60) and u.background_result is not None
        assert u.background_result.status == "current"
        damage(store, 2, "flipped")
        assert hm.predict(PIXELS).where == "cloud"  # noticed here: the damaged version goes, v2 comes again
        assert u.wait_background(60) and u.background_error is None, u.background_error
        assert u.background_result.status == "installed"
        r = hm.predict(PIXELS)
    assert (r.where, r.version, r.fallback) == ("device", 2, None)


def test_background_updates_wait_for_the_conditions_then_the_next_predict_runs_the_new_version(
        ota_server: OtaServer, on_v1: OnV1, predict_key: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(on_v1.store, store)
    now = [DeviceConditions(unmetered=False)]  # on a mobile network: the app's bridge says so
    wifi_only = DownloadConditions(unmetered_only=True)
    updater: ModelUpdater = ota_server.updater(store, device_state=lambda: now[0])
    with updater, CloudClient(ota_server.url, "faces", version=2, api_key=predict_key) as cloud:
        hm = HybridModel(updater, cloud, update_conditions=wifi_only, update_retry_s=0)
        assert updater.wait_background(60) and updater.background_result is not None
        assert updater.background_result.status == "deferred"  # v2 is offered, but not over a metered network
        for _ in range(3):
            r = hm.predict(PIXELS)
            assert (r.where, r.version) == ("device", 1)
            assert not updater.background_running()  # still metered: no new attempt
        assert updater.installed_version() == 1

        now[0] = DeviceConditions(unmetered=True)  # on Wi-Fi now
        assert hm.predict(PIXELS).version == 1  # this call starts the update; it runs the installed model
        assert updater.wait_background(60) and updater.background_error is None, updater.background_error
        assert updater.background_result is not None and updater.background_result.status == "installed"
        r = hm.predict(PIXELS)
        cl = hm.predict(PIXELS, policy="only_cloud")
    assert (r.where, r.version, r.model) == ("device", 2, "faces")
    assert np.abs(r.probabilities - cl.probabilities).max() <= 1e-4  # the same v2 the server runs


def test_a_model_installed_over_the_air_runs_its_splits(ota_server: OtaServer, predict_key: str,
                                                        tmp_path: Path) -> None:
    """The heads of a bundle exported with splits come with the model: split@K runs on the device
    as installed, with no bundle folder, and gives the whole model's answer."""
    with ota_server.updater(tmp_path / "store", model="cut") as u, \
            CloudClient(ota_server.url, "cut", version=1, api_key=predict_key) as cloud:
        result = u.update()
        assert (result.status, result.version) == ("installed", 1)
        assert sorted(result.sources) == ["head_5.onnx", "head_7.onnx", "manifest.json", "model.onnx"]
        hm = HybridModel(u, cloud)
        whole = hm.predict(PIXELS, policy="only_device")
        for policy in ("split@5", "split@7+int8"):
            got = hm.predict(PIXELS, policy=policy)
            assert (got.where, got.placement, got.version, got.fallback) == ("split", policy, 1, None)
            tol = 1e-4 if "int8" not in policy else 0.05
            assert np.abs(got.outputs["embedding"] - whole.outputs["embedding"]).max() <= tol
