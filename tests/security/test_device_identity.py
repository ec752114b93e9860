"""Hostile devices against a real `tandem serve`: a device speaks only for the id the server gave it,
its word (health reports) counts once and only where the server offered it something, the fleet's key
only enrols, and a key's model scope holds (issue 14, section 2)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tandem.registry.ota.devices import Devices
from tandem.registry.ota.rollout import bucket
from tandem.registry.records import ModelScope
from tandem.registry.registry import Registry
from tests.security.target import target

pytestmark = [pytest.mark.integration, pytest.mark.redteam("device_identity")]

GATE = {"max_failure_rate": 0.5, "min_devices": 5, "percent": 100}
ENROL_BURST = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bundles):
    releases = (("faces", 1), ("secret", 1), ("faces", 2, {"channel": "staged", "percent": 50}),
                ("faces", 2, {"channel": "narrow", "percent": 10}),
                ("faces", 2, {"channel": "gate-a", **GATE}), ("faces", 2, {"channel": "gate-b", **GATE}))
    with target(tmp_path_factory.mktemp("identity"), [tiny_bundles[k] for k in ("v1", "v2", "secret")], releases,
                key_cache_s=0, ota_report_flush_s=0.05, alias_poll_s=0.05, device_enrol_burst=ENROL_BURST,
                device_enrol_per_s=0.01, per_device_rate_limit_burst=1000) as t:
        yield t


def device(server, key=None):
    device_id, credential = server.register(key)
    return device_id, server.client(credential)


def state(server, channel: str) -> str:
    with server.ota() as ota:
        return next(r.state for r in ota.releases.releases("faces", channel) if r.version == 2)


def report(http, channel: str, failed: bool):
    return http.post("/v1/ota/report", json={"model": "faces", "version": 2, "channel": channel,
                                             "load_failures": int(failed), "inferences": 10})


def test_a_device_speaks_only_for_itself(server):
    _me, http = device(server)
    other, _ = server.register()
    with http:
        for route, body in (("/v1/ota/check", {}), ("/v1/ota/keys", {"version": 1}),
                            ("/v1/ota/report", {"version": 1})):
            r = http.post(route, json={"model": "faces", "device_id": other, **body})
            assert r.status_code == 403 and "a device speaks only for itself" in r.json()["error"], route
        r = http.post("/v1/ota/check", json={"model": "faces", "schema": 2})
        assert r.status_code == 200


def test_a_device_cannot_choose_its_rollout_bucket(server):
    """The bucket is the server-assigned id's: claiming a lucky id is refused, never used."""
    lucky = next(f"phone-{i}" for i in range(1000) if bucket("faces", "staged", f"phone-{i}") < 50)
    for _ in range(6):
        me, http = device(server)
        with http:
            assert http.post("/v1/ota/check", json={"model": "faces", "channel": "staged", "device_id": lucky,
                                                    "schema": 2}).status_code == 403
            r = http.post("/v1/ota/check", json={"model": "faces", "channel": "staged", "version": 1, "schema": 2})
        assert r.status_code == 200
        payload = json.loads(base64.b64decode(r.json()["payload"]))
        in_rollout = bucket("faces", "staged", me) < 50
        assert (payload["action"], payload["version"]) == (("install", 2) if in_rollout else ("stay", 1))


def test_the_fleet_key_alone_gets_no_updates(server):
    with server.client(server.keys["device"]) as http:
        for method, path, body in (("post", "/v1/ota/check", {"model": "faces", "device_id": "d"}),
                                   ("post", "/v1/ota/keys", {"model": "faces", "version": 1, "device_id": "d"}),
                                   ("post", "/v1/ota/report", {"model": "faces", "version": 1, "device_id": "d"}),
                                   ("get", "/v1/ota/signing-keys", None)):
            r = http.request(method, path, json=body)
            assert r.status_code == 403 and "only registers devices" in r.json()["error"], path


def test_a_device_credential_opens_the_ota_routes_only(server):
    _, http = device(server)
    with http:
        for method, path in (("get", "/v2"), ("post", "/v1/devices"), ("get", "/metrics"),
                             ("post", "/v1/apps/classify/faces:predict")):
            r = http.request(method, path)
            assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"], path


def test_a_revoked_device_is_refused_alone(server):
    me, mine = device(server)
    _, theirs = device(server)
    with Registry.open(server.settings) as reg:
        Devices(reg).revoke(me)
    with mine, theirs:
        r = mine.post("/v1/ota/check", json={"model": "faces"})
        assert r.status_code == 401 and r.json()["error"] == "unknown or revoked device credential"
        assert theirs.post("/v1/ota/check", json={"model": "faces", "schema": 2}).status_code == 200


def test_a_report_about_a_release_never_offered_to_the_device_does_not_count(server):
    outside = None
    for _ in range(40):
        me, http = device(server)
        if bucket("faces", "narrow", me) >= 10:
            outside = http
            break
        http.close()
    assert outside is not None
    with outside:
        r = report(outside, "narrow", failed=True)
        assert r.status_code == 403 and "was never offered to device" in r.json()["error"]
        r = outside.post("/v1/ota/keys", json={"model": "faces", "version": 2, "channel": "narrow"})
        assert r.status_code == 403 and "is not offered to device" in r.json()["error"]  # nor its data key


def test_repeated_failure_reports_are_one_vote_and_few_devices_cannot_halt_a_release(server):
    """Four devices fail, each reporting again and again: one counted report each (the rest 429), and
    four is under the gate's five distinct devices: the release stays. A fifth device's report makes five."""
    devices = [device(server)[1] for _ in range(4)]
    for http in devices:
        assert report(http, "gate-a", failed=True).status_code == 204
        for _ in range(5):
            r = report(http, "gate-a", failed=True)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    time.sleep(0.5)  # several flushes
    assert state(server, "gate-a") == "active"
    with server.ota() as ota:
        health = next(r for r in ota.releases.releases("faces", "gate-a") if r.version == 2).health
    assert (health.devices, health.failed_devices, health.reports) == (4, 4, 4)
    fifth = device(server)[1]
    assert report(fifth, "gate-a", failed=False).status_code == 204
    deadline = time.monotonic() + 10
    while state(server, "gate-a") != "rolled_back":  # 4 of 5 distinct devices failed: over 0.5
        assert time.monotonic() < deadline, "the gate did not trip"
        time.sleep(0.05)
    for http in [*devices, fifth]:
        http.close()


def test_a_flood_of_clean_reports_from_one_device_cannot_hide_failures(server):
    failing = [device(server)[1] for _ in range(3)]
    for http in failing:
        assert report(http, "gate-b", failed=True).status_code == 204
    _, flooder = device(server)
    statuses = [report(flooder, "gate-b", failed=False).status_code for _ in range(30)]
    assert statuses[0] == 204 and set(statuses[1:]) == {429}  # one vote
    _, last = device(server)
    assert report(last, "gate-b", failed=False).status_code == 204
    deadline = time.monotonic() + 10
    while state(server, "gate-b") != "rolled_back":  # 3 failed of 5 devices, not 3 of 33 reports
        assert time.monotonic() < deadline, "the gate did not trip"
        time.sleep(0.05)
    for http in [*failing, flooder, last]:
        http.close()


def test_a_scoped_device_learns_nothing_of_other_models(server):
    with Registry.open(server.settings) as reg:
        scoped, _ = reg.create_key("device", "faces only", ModelScope(("faces",)))
    _, http = device(server, scoped)
    with http:
        for route, body in (("/v1/ota/check", {}), ("/v1/ota/keys", {"version": 1}),
                            ("/v1/ota/report", {"version": 1})):
            secret = http.post(route, json={"model": "secret", **body})
            unknown = http.post(route, json={"model": "nosuch", **body})
            assert secret.status_code == unknown.status_code == 404, route
            assert secret.json()["error"] == unknown.json()["error"].replace("nosuch", "secret"), route
        assert http.post("/v1/ota/check", json={"model": "faces", "schema": 2}).status_code == 200


def test_the_fleet_key_registers_within_a_budget_of_its_own(server):
    with Registry.open(server.settings) as reg:
        extracted, _ = reg.create_key("device", "extracted from an app")
    with server.client(extracted) as http:
        codes = [http.post("/v1/devices").status_code for _ in range(ENROL_BURST + 2)]
    assert codes[:ENROL_BURST] == [201] * ENROL_BURST and codes[ENROL_BURST:] == [429, 429]
    # Another fleet's key (its own budget) still registers.
    assert server.register()[1].startswith("tdd_")
