"""`POST /v1/ota/check` on a real server over a real SQLite registry: signed answers (schema 1: 204 when
current; schema 2: a signed stay, reasons, expiry), staged rollouts, targeting, pins, halt, rollback, and
the health gate."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from tandem.registry.ota.rollout import bucket
from tests.integration.ota.server.helpers import SYNC_DEADLINE_S, DeviceSide, synced
from tests.integration.server.serving import running

pytestmark = pytest.mark.integration

ANDROID = {"platform": "android", "os_version": "14", "app_version": "2.4.0", "ram_mb": 4096}


@pytest.fixture()
def served(env):
    with env.server() as server:
        device = DeviceSide(server, env.keys.admin)
        try:
            yield server, device
        finally:
            device.close()


def test_a_release_is_offered_signed_and_then_current(env, served):
    server, device = served
    r = device.check_raw("phone-1")
    assert r.status_code == 404 and "no releases on channel 'production'" in r.json()["error"]
    with env.ota() as ota:
        ota.releases.release("faces", 1, "production")
        v1 = ota.reg.get("faces", 1)
    gen = synced(server)
    device.trust_server_keys()  # the signing key was made by the first release

    payload = device.check("phone-1", None, **ANDROID)
    assert payload is not None
    assert {k: payload[k] for k in ("schema", "model", "version", "action", "channel", "device_id", "sequence",
                                    "precision", "manifest_sha256")} == {
        "schema": 1, "model": "faces", "version": 1, "action": "install", "channel": "production",
        "device_id": "phone-1", "sequence": gen, "precision": "fp32", "manifest_sha256": v1.manifest_sha256}
    assert payload["issued_at"].endswith("Z")
    files = payload["files"]
    assert set(files) == {"manifest.json", "model.onnx"}
    assert files["manifest.json"] == {"sha256": v1.manifest_sha256, "size": files["manifest.json"]["size"],
                                      "url": f"/v1/ota/files/{v1.manifest_sha256}"}
    model = files["model.onnx"]
    assert model["sha256"] == v1.files["model.onnx"] and "delta" not in model
    assert model["encrypted"]["alg"] == "AES-256-GCM"
    assert model["url"] == f"/v1/ota/files/{model['encrypted']['sha256']}" != f"/v1/ota/files/{model['sha256']}"
    # int8 is asked for, but this bundle has only fp32: the payload says which precision it sends.
    assert device.check("phone-1", None, precision="int8")["precision"] == "fp32"

    assert device.check("phone-1", 1, **ANDROID) is None  # runs what it should: 204
    assert device.check_raw("phone-1", 1).content == b""


def test_the_next_release_comes_as_a_small_delta_from_the_installed_version(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2)
        gen = ota.reg.generation()
    synced(server)
    device.trust_server_keys()
    fresh = device.check("phone-1", None)
    assert fresh["version"] == 2 and "delta" not in fresh["files"]["model.onnx"]  # nothing installed: full file
    payload = device.check("phone-1", 1)
    assert payload["version"] == 2 and payload["sequence"] == gen
    model = payload["files"]["model.onnx"]
    delta = model["delta"]
    assert delta["from_version"] == 1 and delta["size"] < model["encrypted"]["size"] // 5  # only the head changed
    assert delta["url"] == f"/v1/ota/deltas/{delta['from_sha256']}/{model['encrypted']['sha256']}"


def test_a_staged_rollout_keeps_its_devices_as_it_widens(env, served):
    server, device = served
    ids = [f"device-{i:04d}" for i in range(1000)]
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2, percent=10)
    synced(server)
    device.trust_server_keys()

    def on_v2() -> set[str]:
        out = set()
        for d in ids:
            payload = device.check(d, 1)
            if payload is not None:
                assert payload["version"] == 2
                out.add(d)
        return out

    at_10 = on_v2()
    with env.ota() as ota:
        ota.releases.release("faces", 2, percent=50)
    synced(server)
    at_50 = on_v2()
    assert at_10 == {d for d in ids if bucket("faces", "production", d) < 10}
    assert at_10 < at_50 and 50 < len(at_10) < 150 and 400 < len(at_50) < 600


def test_targeting_by_app_version_platform_os_and_ram(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2, min_app_version="2.3", max_app_version="3.0", platforms=["android"],
                             min_os_version="12", min_ram_mb=2048)
    synced(server)
    device.trust_server_keys()
    assert device.check("ok", 1, **ANDROID)["version"] == 2
    for change in ({"app_version": "2.2.9"}, {"app_version": "3.1"}, {"platform": "ios"}, {"os_version": "11"},
                   {"ram_mb": 1024}, {"app_version": None}):
        assert device.check("not-covered", 1, **{**ANDROID, **change}) is None, change  # stays on v1
        assert device.check("new", None, **{**ANDROID, **change})["version"] == 1, change
    r = device.check_raw("bad", 1, **{**ANDROID, "app_version": "2.x"})
    assert r.status_code == 400 and "app_version '2.x' is not a version" in r.json()["error"]


def test_a_pin_wins_over_the_releases(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2)
        ota.releases.pin("faces", "test-phone", 1)
    synced(server)
    device.trust_server_keys()
    pinned = device.check("test-phone", 2)
    assert (pinned["version"], pinned["action"]) == (1, "rollback")
    assert device.check("other-phone", 2) is None
    with env.ota() as ota:
        ota.releases.unpin("faces", "test-phone")
    synced(server)
    assert device.check("test-phone", 2) is None


def test_halt_keeps_devices_where_they_are(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2)
        ota.releases.halt("faces", 2)
    synced(server)
    device.trust_server_keys()
    assert device.check("has-v2", 2) is None  # keeps it
    assert device.check("has-v1", 1) is None  # gets no v2
    assert device.check("new", None)["version"] == 1


def test_rollback_sends_devices_back_with_action_rollback(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2)
    seq_before = synced(server)
    device.trust_server_keys()
    assert device.check("phone", 1)["version"] == 2
    with env.ota() as ota:
        rolled = ota.releases.rollback("faces")
    assert (rolled.version, rolled.state) == (2, "rolled_back")
    synced(server)
    back = device.check("phone", 2)
    assert (back["version"], back["action"]) == (1, "rollback") and back["sequence"] > seq_before
    assert device.check("phone", 1) is None


def test_the_health_gate_halts_and_rolls_back_a_failing_release(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1, max_failure_rate=0.5, min_devices=10)
        ota.releases.release("faces", 2, max_failure_rate=0.2, min_devices=5)
    synced(server)
    device.trust_server_keys()
    for i in range(10):  # v1 is healthy: one failing device in ten is under its 50%
        assert device.report(f"old-{i}", 1, inferences=100, inference_errors=int(i == 0), p50_ms=3.0,
                             p99_ms=9.0).status_code == 204
    for i in range(5):  # every v2 device fails to load it
        assert device.report(f"new-{i}", 2, load_failures=1).status_code == 204
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while (answer := device.check("new-0", 2)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answer is not None and (answer["version"], answer["action"]) == (1, "rollback")
    with env.ota() as ota:
        v2, v1 = ota.releases.releases("faces")
    assert v2.state == "rolled_back" and "health gate: 5 of 5 devices failed" in v2.note
    assert (v2.health.devices, v2.health.load_failures, v2.health.failure_rate) == (5, 5, 1.0)
    assert v1.state == "active" and (v1.health.devices, v1.health.failed_devices, v1.health.inferences) == (10, 1, 1000)
    assert v1.health.p99_ms_mean == pytest.approx(9.0)


def test_forged_and_repeated_reports_count_once_per_device(env):
    """One device id repeating a failure (to halt a release for everyone), or a clean report (to hide a
    broken one), is one device: its later reports replace the earlier, and the server counts one per
    TANDEM_OTA_REPORT_INTERVAL_S (429 with Retry-After past that)."""
    with env.ota() as ota:
        ota.releases.release("faces", 1, max_failure_rate=0.3, min_devices=4)
    fast = env.settings.model_copy(update={"ota_report_interval_s": 0.05})
    with running(fast) as server:
        device = DeviceSide(server, env.keys.admin)
        try:
            synced(server)
            for i in range(30):  # spaced past the interval: each counted, each replacing the one before
                assert device.report("liar", 1, load_failures=1).status_code == 204, i
                time.sleep(0.06)
            for i in range(3):
                assert device.report(f"ok-{i}", 1, inferences=10).status_code == 204
        finally:
            device.close()
    with env.ota() as ota:
        [v1] = ota.releases.releases("faces")
    assert (v1.state, v1.health.devices, v1.health.failed_devices, v1.health.reports) == ("active", 4, 1, 33)

    slow = env.settings.model_copy(update={"ota_report_interval_s": 60})
    with running(slow) as server:
        device = DeviceSide(server, env.keys.admin)
        try:
            synced(server)
            assert device.report("flooder", 1, inferences=10).status_code == 204
            for _ in range(20):  # a flood from one device: refused, not counted
                r = device.report("flooder", 1, inferences=10)
                assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60, r.text
            assert "reported on faces less than 60 s ago" in r.json()["error"]
            assert device.report("another", 1, inferences=10).status_code == 204  # its own budget
        finally:
            device.close()
    with env.ota() as ota:
        [v1] = ota.releases.releases("faces")
    assert (v1.health.devices, v1.health.failed_devices, v1.health.reports) == (6, 1, 35)


def test_reports_only_from_devices_the_release_was_offered_to(env, served):
    server, device = served
    inside = next(d for d in (f"d{i}" for i in range(1000)) if bucket("faces", "production", d) < 10)
    outside = next(d for d in (f"d{i}" for i in range(1000)) if bucket("faces", "production", d) >= 10)
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2, percent=10, platforms=["android"])
        ota.releases.pin("faces", "tester", 3)
    synced(server)
    assert device.report(inside, 2, platform="android", inferences=1).status_code == 204
    assert device.report("tester", 3, inferences=1).status_code == 404  # a pin is not a release: nothing to count
    for device_id, facts in ((outside, {"platform": "android"}),  # outside the 10%
                             (inside, {"platform": "ios"}),  # not a platform v2 is for
                             (inside, {})):  # says no platform: not covered
        r = device.report(device_id, 2, inference_errors=1, inferences=1, **facts)
        assert r.status_code == 403 and "was never offered to device" in r.json()["error"], (device_id, facts)
        assert "www-authenticate" not in r.headers
    assert device.report(outside, 1, inferences=1).status_code == 204  # v1 covers everyone


def test_bad_requests_say_what_was_wrong(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    synced(server)
    http = device.http
    cases = [
        ({"content": b"{not json"}, 400, "not valid JSON"),
        ({"json": [1, 2]}, 400, "must be a JSON object"),
        ({"json": {"device_id": "d"}}, 400, "'model' is required"),
        ({"json": {"model": "faces"}}, 400, "device_id None is not a valid device id"),
        ({"json": {"model": "faces", "device_id": "a b"}}, 400, "is not a valid device id"),
        ({"json": {"model": "faces", "device_id": "d", "version": 0}}, 400, "'version' must be a whole number"),
        ({"json": {"model": "faces", "device_id": "d", "version": True}}, 400, "'version' must be a whole number"),
        ({"json": {"model": "faces", "device_id": "d", "precision": "bf16"}}, 400, "'precision' must be one of"),
        ({"json": {"model": "faces", "device_id": "d", "channel": "Beta!"}}, 400, "not a valid channel name"),
        ({"json": {"model": "faces", "device_id": "d", "ram_mb": -1}}, 400, "'ram_mb' must be a whole number"),
        ({"json": {"model": "nope", "device_id": "d"}}, 404, "no model named 'nope'"),
        ({"json": {"model": "../x", "device_id": "d"}}, 404, "no model named"),
        ({"json": {"model": "faces", "device_id": "d", "channel": "beta"}}, 404, "no releases on channel 'beta'"),
        ({"content": b"x" * 20000}, 413, "exceeds the server's limit"),
    ]
    for kwargs, status, message in cases:
        r = http.post("/v1/ota/check", **kwargs)
        assert r.status_code == status and message in r.json()["error"], (kwargs, r.text)


def test_schema_2_signs_every_answer_with_a_reason_and_an_expiry(env, served):
    server, device = served
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2, min_app_version="2.0")
    synced(server)
    device.trust_server_keys()
    two = {"schema": 2, "app_version": "2.4"}
    offer = device.check("phone", 1, **two)
    assert (offer["schema"], offer["version"], offer["action"], offer["reason"]) == (2, 2, "install", "release")
    issued = datetime.fromisoformat(offer["issued_at"])
    assert datetime.fromisoformat(offer["expires_at"]) - issued == timedelta(seconds=env.settings.ota_payload_ttl_s)
    stay = device.check("phone", 2, **two)  # current: a signed "stay", not an unsigned 204
    assert (stay["action"], stay["reason"], stay["version"], stay["device_id"]) == ("stay", "current", 2, "phone")
    assert "files" not in stay and stay["expires_at"] > stay["issued_at"]
    # What a device (or a network in between) says of itself never earns a signed downgrade: nothing
    # was rolled back or pinned, so a v2 device claiming an app v2 no longer covers stays where it is.
    claim = device.check("phone", 2, schema=2, app_version="1.0")
    assert (claim["action"], claim["reason"], claim["version"]) == ("stay", "no_recorded_rollback", 2)
    assert device.check("phone", 2, app_version="1.0") is None  # schema 1: 204, and no rollback either
    assert device.check("phone", 9, **two)["reason"] == "no_recorded_rollback"
    with env.ota() as ota:
        ota.releases.pin("faces", "pinned", 1)
    synced(server)
    pinned = device.check("pinned", 2, **two)
    assert (pinned["action"], pinned["reason"], pinned["version"]) == ("rollback", "pin", 1)
    with env.ota() as ota:
        ota.releases.rollback("faces")
    synced(server)
    back = device.check("phone", 2, **two)
    assert (back["action"], back["reason"], back["version"]) == ("rollback", "rolled_back", 1)
    assert device.check("new", None, schema=2, platform="ios", app_version="0.1")["action"] == "install"
    with env.ota() as ota:
        ota.releases.halt("faces", 1)
    synced(server)
    none = device.check("new", None, **two)
    assert (none["action"], none["reason"], none["version"]) == ("stay", "no_release", None)
    r = device.check_raw("phone", 1, schema=3)
    assert r.status_code == 400 and "not a payload schema this server signs" in r.json()["error"]
