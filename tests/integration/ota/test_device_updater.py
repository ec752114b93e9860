"""ModelUpdater end to end against a real `tandem serve`: first install, a head-only delta update,
resumed downloads, download types and conditions, server rollback, health reports, and attacks
(a tampering network in between) each refused with the running model untouched."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tandem.device import DeviceConditions, DownloadConditions, ModelUpdater, Progress
from tandem.device.faults import ENV
from tandem.device.identity import Identity
from tandem.errors import (
    ChecksumError,
    ConditionsNotMet,
    NotFound,
    RateLimited,
    ServerUnreachable,
    SignatureError,
    Unauthenticated,
)
from tandem.registry.ota.rollout import bucket
from tandem.security.signing import SigningKey
from tandem.testing.processes import until
from tests.integration.ota.conftest import OnV1, OtaServer, Recorder

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
PIXELS = np.random.default_rng(0).integers(0, 256, (2, 100, 75, 3), dtype=np.uint8)


def reference(bundle: Path) -> np.ndarray:
    return ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"pixels": PIXELS})[0]


def copy_of(on_v1: OnV1, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(on_v1.store, store)
    return store


def assert_runs(server: OtaServer, store: Path, version: int, **kw) -> None:
    """The store opens (offline is enough) into exactly this version of faces."""
    with ModelUpdater("http://127.0.0.1:9", server.device_key, "faces", trusted_keys=server.trusted,
                      store_dir=store, timeout=2, **kw) as u:
        loaded = u.load()
        assert loaded.version == version
        np.testing.assert_array_equal(loaded.model.run(PIXELS)["probabilities"],
                                      reference(server.bundles[f"v{version}"]))


def monotonic(events: list[Progress]) -> bool:
    return all(b.done >= a.done for a, b in pairwise(events)) and \
        events[-1].done == events[-1].total


def test_first_install_then_a_head_only_update_comes_as_a_small_delta(ota_server, tmp_path):
    store = tmp_path / "store"
    events: list[Progress] = []
    with ota_server.updater(store) as u:
        ota_server.pin(u.device_id, 1)
        until(lambda: (p := u.check()) is not None and p.version == 1, "the pin to v1")
        first = u.get_model("latest", progress=events.append)
        assert first.version == 1 and first.manifest.name == "faces"
        assert set(first.files) == {"gallery.npz"} and first.files["gallery.npz"][:2] == b"PK"
        full = sum(os.path.getsize(ota_server.bundles["v1"] / f) for f in ("model.onnx", "gallery.npz", "manifest.json"))
        assert len(events) > 5 and monotonic(events) and events[-1].total >= full

        ota_server.unpin(u.device_id)
        until(lambda: (p := u.check()) is not None and p.version == 2, "the unpin")
        events.clear()
        result = u.update(progress=events.append)
        assert result.status == "installed" and result.version == 2
        # Only the head changed: the model comes as a delta, the gallery is the installed one.
        assert result.sources == {"manifest.json": "full", "model.onnx": "delta", "gallery.npz": "local"}
        assert 0 < result.downloaded_bytes < 0.05 * full
        assert monotonic(events)
        assert u.check() is None  # current now: 204
        assert [(i.version, i.current, i.previous) for i in u.installed()] == [(1, False, True), (2, True, False)]
        assert u.get_model("local").files == first.files
    assert not list(store.rglob("*.part")), "the delta's patch (and every download) is gone once installed"
    assert_runs(ota_server, store, 2)
    # At rest the model is encrypted: no tensor of v2 can be found in the store's files.
    plain = (ota_server.bundles["v2"] / "model.onnx").read_bytes()
    for path in store.rglob("*"):
        if path.is_file():
            assert plain[-2048:] not in path.read_bytes()


class Tamper(httpx.BaseTransport):
    """A network between device and server that rewrites answers (the attacker in these tests)."""

    def __init__(self, rewrite: Callable[[httpx.Request, bytes], bytes | None]) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        new = self.rewrite(request, body)
        if new is None:
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-range")}
        # The attacker answers as a server with something to say: 200 (never 204 "current", nor 206).
        return httpx.Response(200 if response.status_code in (204, 206) else response.status_code, headers=headers,
                              content=new)


def _payload(envelope: bytes) -> dict:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))


def _model_blob(request: httpx.Request, body: bytes) -> bool:
    """An encrypted model file or delta (the manifest is JSON: left alone here)."""
    return request.url.path.startswith(("/v1/ota/files/", "/v1/ota/deltas/")) and not body.startswith(b"{")


def _flip(body: bytes) -> bytes:
    i = len(body) // 2
    return body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]


def _resign(envelope: bytes, change: dict, key: SigningKey | None = None) -> bytes:
    """The payload with ``change`` applied: under the server's signature (now wrong) or another key."""
    env = json.loads(envelope)
    payload = json.dumps({**_payload(envelope), **change}).encode()
    env["payload"] = base64.b64encode(payload).decode()
    if key is not None:
        env["signature"] = base64.b64encode(key.sign(payload)).decode()
        env["key_id"] = key.public.key_id
    return json.dumps(env).encode()


ATTACKS: dict[str, tuple[Callable[..., bytes | None], type, str]] = {
    "tampered model bytes": (lambda ctx, rq, b: _flip(b) if _model_blob(rq, b) else None,
                             ChecksumError, "refusing it"),
    "truncated model file": (lambda ctx, rq, b: b[:-100] if _model_blob(rq, b) else None, ChecksumError, "downloaded"),
    "bytes past the signed size": (lambda ctx, rq, b: b + b"\0" * 64 if _model_blob(rq, b) else None,
                                   ChecksumError, "more than the"),
    "payload changed under the signature": (
        lambda ctx, rq, b: _resign(b, {"version": 9}) if rq.url.path == "/v1/ota/check" else None,
        SignatureError, "does not match the payload"),
    "payload signed with an unknown key": (
        lambda ctx, rq, b: _resign(b, {}, SigningKey.generate()) if rq.url.path == "/v1/ota/check" else None,
        SignatureError, "does not trust"),
    "manifest issued to another device": (
        lambda ctx, rq, b: ctx["other_device"] if rq.url.path == "/v1/ota/check" else None,
        SignatureError, "issued to device"),
    "manifest of another model swapped in": (
        lambda ctx, rq, b: ctx["other_model"] if rq.url.path == "/v1/ota/check" else None,
        SignatureError, "is for model 'rolling'"),
}


@pytest.fixture(scope="module")
def signed_elsewhere(ota_server, tmp_path_factory) -> dict[str, bytes]:
    """Genuine signed answers meant for someone else, for the swap attacks."""
    out = {}
    for name, model in (("other_device", "faces"), ("other_model", "rolling")):
        recorder = Recorder()
        with ota_server.updater(tmp_path_factory.mktemp(name), model=model, transport=recorder) as u:
            assert u.check() is not None
        out[name] = recorder.checks[-1]
    return out


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacks_are_refused_and_the_running_model_stays(ota_server, on_v1, signed_elsewhere, tmp_path, attack):
    store = copy_of(on_v1, tmp_path)
    before = sorted((p.relative_to(store).as_posix(), p.read_bytes()) for p in (store / "faces" / "versions").rglob("*")
                    if p.is_file())
    rewrite, error, reason = ATTACKS[attack]
    transport = Tamper(lambda rq, b: rewrite(signed_elsewhere, rq, b))
    with ota_server.updater(store, transport=transport) as u:
        with pytest.raises(error, match=reason):
            u.get_model("latest")
        assert u.load().version == 1
    after = sorted((p.relative_to(store).as_posix(), p.read_bytes()) for p in (store / "faces" / "versions").rglob("*")
                   if p.is_file())
    assert after == before
    assert_runs(ota_server, store, 1)


def test_a_damaged_delta_costs_the_full_download_not_the_update(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    damaged = Tamper(lambda rq, b: _flip(b) if rq.url.path.startswith("/v1/ota/deltas/") else None)
    with ota_server.updater(store, transport=damaged) as u:
        result = u.update()
    assert result.version == 2 and result.sources["model.onnx"] == "full"
    assert_runs(ota_server, store, 2)


class Freeze(httpx.BaseTransport):
    """A network that answers every update check with an unsigned 204 ("nothing new") to hold the device back."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/ota/check":
            return httpx.Response(204)
        return self.inner.handle_request(request)


def test_a_frozen_device_knows_how_stale_its_last_signed_answer_is(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    with ota_server.updater(store) as u:
        assert u.update().version == 2
        assert u.check() is None  # current: the server signed a "stay" saying so
        last = u.last_signed_answer()
        assert (last.action, last.reason) == ("stay", "current") and last.expires_at > last.issued_at
        assert 0 <= u.answer_age_s() < 60
    with ota_server.updater(store, transport=Freeze()) as u:
        time.sleep(1.1)
        assert u.update().status == "current"  # the unsigned 204 is taken as "nothing new"…
        assert u.last_signed_answer() == last  # …but proves nothing: the last signed answer stays the old one
        assert u.answer_age_s() >= 1


def test_a_replayed_old_manifest_cannot_downgrade(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    with ota_server.updater(store) as u:
        assert u.update().version == 2
    replay = Tamper(lambda rq, b: on_v1.envelope_v1 if rq.url.path == "/v1/ota/check" else None)
    with ota_server.updater(store, transport=replay) as u, pytest.raises(SignatureError, match="replayed"):
        u.update()
    assert_runs(ota_server, store, 2)


def test_wrong_device_key_unknown_model_and_a_device_outside_the_rollout(ota_server, tmp_path):
    with ota_server.updater(tmp_path / "a", api_key="tdm_000000000000_" + "x" * 43) as u, \
            pytest.raises(Unauthenticated, match="device API key"):
        u.get_model("latest")
    with ota_server.updater(tmp_path / "b", model="no-such-model") as u, pytest.raises(NotFound, match="no model named"):
        u.get_model("latest")
    # 'staged' is released to 30% of devices: the same rule the server applies, on the id the server
    # assigned at registration (a device cannot choose it), decides who is in.
    seen = {True: 0, False: 0}
    for i in range(40):
        with ota_server.updater(tmp_path / f"phone-{i}", model="staged") as u:
            inside = bucket("staged", "production", u.device_id) < 30
            if seen[inside]:
                continue
            seen[inside] += 1
            if inside:
                assert u.get_model("latest").version == 1
            else:
                with pytest.raises(NotFound, match="outside its rollout"):
                    u.get_model("latest")
                assert u.installed() == []
        if all(seen.values()):
            break
    assert all(seen.values()), seen


def test_the_device_registers_once_and_keeps_its_credential_wrapped(ota_server, tmp_path):
    store = tmp_path / "store"
    with ota_server.updater(store) as u:
        device_id = u.device_id  # registers now: the id is the server's
        credential = u.registration().credential
        assert credential.startswith(f"tdd_{device_id}_")
        assert u.check() is not None
    with ota_server.updater(store) as u:
        assert u.device_id == device_id  # kept: no second registration
    stored = (store / "device.json").read_text()
    secret = credential.removeprefix(f"tdd_{device_id}_")  # url-safe base64: it may hold '_' itself
    assert device_id in stored and len(secret) == 43 and secret not in stored  # the secret only wrapped
    listed = ota_server.cli("devices", "list")
    assert [d["enrolled_by"] for d in listed if d["device_id"] == device_id] == [ota_server.device_key.split("_")[1]]
    # The credential is bound to this server: an app pointed at another server registers there instead.
    other = Identity(store, "http://elsewhere.example", ota_server.device_key)
    assert other.load() is None
    # Revoked alone: this device is refused, and says so; a new registration is the app's explicit choice.
    assert ota_server.cli("devices", "revoke", device_id)["revoked"] is not None
    with ota_server.updater(store) as u:

        def refused() -> bool:  # within TANDEM_KEY_CACHE_S
            try:
                u.check()
            except Unauthenticated as e:
                assert "this device's credential was refused" in str(e)
                return True
            return False

        until(refused, "the revocation to reach the server", timeout=15)
        assert u.register(again=True) != device_id and u.check() is not None


class CutOnce(httpx.BaseTransport):
    """The real network, except that the first download of the model blob breaks after ``after`` bytes."""

    def __init__(self, after: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.after = after
        self.cut = False
        self.seen: list[tuple[str | None, int]] = []  # (Range header, status) of each file download

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.startswith("/v1/ota/files/"):
            return response
        self.seen.append((request.headers.get("range"), response.status_code))
        size = int(response.headers.get("content-length", "0"))
        if self.cut or size < 2 * self.after:
            return response
        self.cut = True
        after, inner = self.after, response

        class Broken(httpx.SyncByteStream):
            def __iter__(self):
                sent = 0
                for chunk in inner.iter_raw():
                    if sent + len(chunk) >= after:
                        yield chunk[: after - sent]
                        inner.close()
                        raise httpx.ReadError("connection reset by peer")
                    sent += len(chunk)
                    yield chunk

        return httpx.Response(response.status_code, headers=response.headers, stream=Broken())


def test_a_cut_download_resumes_with_range(ota_server, tmp_path):
    transport = CutOnce(after=30_000)
    events: list[Progress] = []
    with ota_server.updater(tmp_path / "store", transport=transport) as u:
        result = u.update(progress=events.append)
        assert result.status == "installed" and result.sources["model.onnx"] == "full"
    assert transport.cut
    ranges = [(r, s) for r, s in transport.seen if r is not None]
    assert ranges == [("bytes=30000-", 206)]
    total = events[-1].total
    assert result.downloaded_bytes == total  # the first 30 000 bytes were not fetched twice
    assert monotonic(events) and len(events) > 5
    assert_runs(ota_server, tmp_path / "store", 2)


def test_a_download_killed_with_its_process_resumes_in_the_next(ota_server, tmp_path):
    store = tmp_path / "store"
    code = (
        "import sys\n"
        "from tandem.device import ModelUpdater\n"
        "from tandem.security.signing import PublicKey\n"
        "url, key, store, *trusted = sys.argv[1:]\n"
        "u = ModelUpdater(url, key, 'faces', store_dir=store, trusted_keys=[PublicKey.from_b64(t) for t in trusted],\n"
        "                 app_version='2.4.0', platform='android', os_version='14', ram_mb=4096)\n"
        "u.update()\n"
    )
    args = [ota_server.url, ota_server.device_key, str(store), *(k.to_b64() for k in ota_server.trusted)]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, ENV: "download"},
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    parts = list((store / "faces" / "downloads").glob("*.part"))
    model_size = os.path.getsize(ota_server.bundles["v2"] / "model.onnx")
    cut = [p.stat().st_size for p in parts if p.stat().st_size < model_size * 0.9 and p.stat().st_size >= 16384]
    assert len(cut) == 1  # the model file, killed part-way (the small files came whole before it)
    events: list[Progress] = []
    with ota_server.updater(store) as u:
        assert u.installed() == []
        result = u.update(progress=events.append)
    assert result.version == 2
    assert events[0].done > 0  # the bytes the killed process had received count from the start
    assert result.downloaded_bytes <= events[-1].total - cut[0]
    assert not list((store / "faces" / "downloads").glob("*.part"))
    assert_runs(ota_server, store, 2)


def test_conditions_defer_and_a_background_update_lands_for_the_next_call(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    on_cellular = lambda: DeviceConditions(unmetered=False, charging=True, idle=True)
    wifi_only = DownloadConditions(unmetered_only=True)
    with ota_server.updater(store, device_state=on_cellular) as u:
        assert u.update(wifi_only).status == "deferred"
        assert u.get_model("latest", wifi_only).version == 1
    with ota_server.updater(tmp_path / "empty", device_state=on_cellular) as u, \
            pytest.raises(ConditionsNotMet, match="an unmetered network"):
        u.get_model("local", wifi_only)
    with ota_server.updater(store) as u:
        assert u.get_model("local_update_in_background").version == 1
        assert u.wait_background(120) and u.background_error is None
        assert u.get_model("local").version == 2


def test_offline_latest_falls_back_to_the_installed_model(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    with ModelUpdater("http://127.0.0.1:9", ota_server.device_key, "faces", trusted_keys=ota_server.trusted,
                      store_dir=store, timeout=2) as u:
        assert u.get_model("latest").version == 1
        with pytest.raises(ServerUnreachable, match="cannot reach"):
            u.update()


def test_a_server_rollback_goes_back_to_the_kept_version_without_downloading(ota_server, tmp_path):
    with ota_server.updater(tmp_path / "store", model="rolling") as u:
        assert u.get_model("latest").version == 1
        ota_server.cli("push", ota_server.bundles["rolling2"])
        ota_server.cli("release", "rolling", 2)
        until(lambda: (p := u.check()) is not None and p.version == 2, "the release of rolling v2")
        assert u.update().version == 2
        ota_server.cli("release-rollback", "rolling")
        until(lambda: (p := u.check()) is not None and p.action == "rollback", "the rollback")
        result = u.update()
        assert (result.version, result.downloaded_bytes) == (1, 0)
        assert set(result.sources.values()) == {"local"}
        assert u.load().version == 1 and u.installed_version() == 1


def test_health_reports_reach_the_release(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    with ota_server.updater(store) as u:
        u.report(inferences=200, inference_errors=1, p50_ms=3.0, p99_ms=9.5)

    def reports() -> int:
        found = ota_server.cli("releases", "faces")["releases"]
        return next(r["devices"] for r in found if r["version"] == 1)

    until(reports, "the report to be written to the registry")
    with ota_server.updater(store) as u, pytest.raises(RateLimited, match="retry in"):
        u.report(inferences=10)  # one counted report per device and model per TANDEM_OTA_REPORT_INTERVAL_S


def test_manifest_and_files_match_the_pushed_bundle(ota_server, on_v1, tmp_path):
    store = copy_of(on_v1, tmp_path)
    with ota_server.updater(store) as u:
        loaded = u.load()
    pushed = json.loads((ota_server.bundles["v1"] / "manifest.json").read_text())
    assert loaded.manifest.files.keys() == pushed["files"].keys()
    gallery = (ota_server.bundles["v1"] / "gallery.npz").read_bytes()
    assert hashlib.sha256(loaded.files["gallery.npz"]).digest() == hashlib.sha256(gallery).digest()
