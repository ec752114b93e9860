"""Device registration on a real server: the fleet's device key only enrols devices (with a budget of its
own); a registered device gets a server-assigned id and credential, speaks only for itself (its rollout
bucket and pins are the server's id), is limited and revoked alone, and its reports count once."""

from __future__ import annotations

import re
import time

import pytest

from tandem.registry.ota.devices import Devices
from tandem.registry.ota.rollout import bucket
from tandem.registry.registry import Registry
from tests.integration.ota.server.helpers import DeviceSide, synced
from tests.integration.server.serving import Running, running

pytestmark = pytest.mark.integration


def register(server: Running, key: str) -> tuple[str, str]:
    with server.client(key) as http:
        r = http.post("/v1/devices")
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"device_id", "credential", "created"}
    return body["device_id"], body["credential"]


def test_a_registered_device_speaks_only_for_itself(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2, percent=50)
    with running(env.settings.model_copy(update={"key_cache_s": 0})) as server:
        synced(server)
        device_id, credential = register(server, env.keys.device)
        assert re.fullmatch("[0-9a-f]{20}", device_id) and credential.startswith(f"tdd_{device_id}_")
        assert register(server, env.keys.device)[0] != device_id  # each registration is a new device
        me = DeviceSide(server, credential)
        try:
            payload = me.check(None)  # no device_id sent: the credential says who this is
            assert payload["device_id"] == device_id
            assert payload["version"] == (2 if bucket("faces", "production", device_id) < 50 else 1)
            assert me.check(device_id)["device_id"] == device_id  # its own id may be sent
            for route, body in (("/v1/ota/check", {}), ("/v1/ota/keys", {"version": 1}),
                                ("/v1/ota/report", {"version": 1})):
                r = me.http.post(route, json={"model": "faces", "device_id": "someone-else", **body})
                assert r.status_code == 403 and "a device speaks only for itself" in r.json()["error"], route
            # The credential is for the OTA routes only: not for inference, not to register more devices.
            for method, path in (("post", "/v1/devices"), ("get", "/v2"), ("get", "/metrics")):
                r = getattr(me.http, method)(path)
                assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"], path

            # A pin names the server's id.
            with env.ota() as ota:
                ota.releases.pin("faces", device_id, 3)
            synced(server)
            assert me.check(None, 1)["version"] == 3

            # Revoked alone: the device gets 401, another device and the fleet's key go on.
            other = DeviceSide(server, register(server, env.keys.device)[1])
            with Registry.open(env.settings) as reg:
                revoked = Devices(reg).revoke(device_id)
            assert revoked.revoked is not None
            r = me.check_raw(None)
            assert r.status_code == 401 and r.json()["error"] == "unknown or revoked device credential"
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            assert other.check_raw(None).status_code == 200
            other.close()
        finally:
            me.close()
    with Registry.open(env.settings) as reg:
        listed = {d.device_id: d for d in Devices(reg).registered()}
    assert len(listed) == 4 and listed[device_id].revoked is not None  # env's own, two here, and `other`
    assert {d.enrolled_by for d in listed.values()} == {env.keys.device.split("_")[1]}


def test_the_fleet_key_only_enrols_with_a_budget_of_its_own(env, tmp_path):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    tight = env.settings.model_copy(update={"device_enrol_burst": 3, "device_enrol_per_s": 0.01})
    with running(tight) as server:
        synced(server)
        for _ in range(3):
            register(server, env.keys.device)
        with server.client(env.keys.device) as http:
            r = http.post("/v1/devices")
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 60, r.text
            assert "has registered as many devices as it may" in r.json()["error"]
            r = http.post("/v1/ota/check", json={"model": "faces", "device_id": "self-chosen"})
            assert r.status_code == 403 and "only registers devices" in r.json()["error"]
        with Registry.open(env.settings) as reg:
            second = reg.create_key("device", "another app")[0]
        register(server, second)  # another key, its own budget
        register(server, env.keys.admin)  # an admin key may register a device too


def test_each_registered_device_has_its_own_rate_limit(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    tight = env.settings.model_copy(update={"per_device_rate_limit_burst": 5, "per_device_rate_limit_per_s": 0.01})
    with running(tight) as server:
        synced(server)
        greedy = DeviceSide(server, register(server, env.keys.device)[1])  # trust_server_keys: its first request
        calm = DeviceSide(server, register(server, env.keys.device)[1])
        try:
            statuses = [greedy.check_raw(None).status_code for _ in range(6)]
            assert statuses[:4] == [200] * 4 and statuses[4:] == [429, 429], statuses
            assert calm.check_raw(None).status_code == 200  # one device's flood is its own
        finally:
            greedy.close()
            calm.close()


def test_reports_from_registered_devices_count_once_each(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1, max_failure_rate=0.5, min_devices=3)
    fast = env.settings.model_copy(update={"ota_report_interval_s": 0.05})
    with running(fast) as server:
        synced(server)
        devices = [DeviceSide(server, register(server, env.keys.device)[1]) for _ in range(3)]
        try:
            for _ in range(10):  # one broken device says so again and again
                assert devices[0].report(None, 1, load_failures=1).status_code == 204
                time.sleep(0.06)
            for d in devices[1:]:
                assert d.report(None, 1, inferences=10).status_code == 204
            with server.client(env.keys.device) as http:  # the shared key's word does not count at all
                r = http.post("/v1/ota/report", json={"model": "faces", "version": 1, "device_id": "x",
                                                      "load_failures": 1})
                assert r.status_code == 403, r.text
        finally:
            for d in devices:
                d.close()
    with env.ota() as ota:
        [v1] = ota.releases.releases("faces")
    assert (v1.state, v1.health.devices, v1.health.failed_devices, v1.health.reports) == ("active", 3, 1, 12)


def test_the_transition_setting_lets_the_shared_key_update_but_never_report(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    legacy = env.settings.model_copy(update={"ota_shared_key_updates": True})
    with running(legacy) as server:
        synced(server)
        old_app = DeviceSide(server, env.keys.device)
        try:
            assert old_app.check("self-chosen")["device_id"] == "self-chosen"
            assert old_app.data_key("self-chosen", 1)
            r = old_app.report("self-chosen", 1, load_failures=1)
            assert r.status_code == 403 and "count only from registered devices" in r.json()["error"]
        finally:
            old_app.close()
