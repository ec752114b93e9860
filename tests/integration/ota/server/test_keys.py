"""Data keys only for an authenticated device and a version offered to it; signing keys rotate with the
old key still listed until it is retired; every OTA route refuses the wrong kind of credential."""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import pytest
from pydantic import SecretStr

from tandem.errors import SignatureError
from tandem.registry.ota.rollout import bucket
from tandem.security import encryption
from tandem.security.signing import PublicKey, verify_envelope
from tests.integration.ota.server.helpers import DeviceSide, synced
from tests.integration.server.serving import running

pytestmark = pytest.mark.integration

ROUTES = [("post", "/v1/ota/check", {"json": {"model": "faces", "device_id": "d"}}),
          ("post", "/v1/ota/keys", {"json": {"model": "faces", "version": 1, "device_id": "d"}}),
          ("post", "/v1/ota/report", {"json": {"model": "faces", "version": 1, "device_id": "d"}}),
          ("get", "/v1/ota/signing-keys", {}),
          ("get", "/v1/ota/files/" + "0" * 64, {}),
          ("get", f"/v1/ota/deltas/{'0' * 64}/{'1' * 64}", {})]


def test_every_ota_route_needs_a_registered_device_or_an_admin_key(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    with env.server() as server:
        synced(server)
        for method, path, kwargs in ROUTES:
            for key, status in ((None, 401), (env.keys.revoked, 401), (env.keys.predict, 403),
                                (env.keys.device, 403)):  # the fleet's shared key only registers devices
                with server.client(key) as http:
                    r = getattr(http, method)(path, **kwargs)
                assert r.status_code == status, (path, key, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer"), path
            with server.client(env.keys.device) as http:
                assert "only registers devices: POST /v1/devices" in getattr(http, method)(path, **kwargs).text
            for key in (env.keys.registered, env.keys.admin):
                with server.client(key) as http:
                    r = getattr(http, method)(path, **{k: _own(v, key, env) for k, v in kwargs.items()})
                    assert r.status_code not in (401, 403), (path, r.text)


def _own(kwargs: dict, key: str, env) -> dict:  # type: ignore[no-untyped-def]
    """A registered device names no device_id (or its own); an admin key names one."""
    if key == env.keys.registered and isinstance(kwargs, dict):
        return {k: v for k, v in kwargs.items() if k != "device_id"}
    return kwargs


def test_a_data_key_only_for_a_version_offered_to_the_device(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2, percent=10, min_app_version="2.0")
        ota.releases.pin("faces", "pinned", 3)
    inside = next(d for d in (f"d{i}" for i in range(1000)) if bucket("faces", "production", d) < 10)
    outside = next(d for d in (f"d{i}" for i in range(1000)) if bucket("faces", "production", d) >= 10)
    with env.server() as server:
        synced(server)
        device = DeviceSide(server, env.keys.admin)
        try:
            payload = device.check(inside, 1, app_version="2.1")
            assert payload["version"] == 2
            key = device.data_key(inside, 2, app_version="2.1")
            entry = payload["files"]["model.onnx"]
            assert len(key) == 32 and device.download(entry, key)  # the key opens the offered file
            r = device.http.post("/v1/ota/keys", json={"model": "faces", "version": 2, "device_id": inside,
                                                       "app_version": "2.1"})
            assert r.json()["key_id"] == entry["encrypted"]["key_id"] and r.headers["cache-control"] == "no-store"
            assert device.data_key(outside, 1) and device.data_key("pinned", 3)  # a release, a pin
            refused = [(outside, 2, {"app_version": "2.1"}),  # outside the 10%
                       (inside, 2, {}),  # says no app version, and v2 wants at least 2.0
                       (inside, 3, {}),  # pushed, never released: only the pinned device gets it
                       ]
            for device_id, version, facts in refused:
                r = device.http.post("/v1/ota/keys", json={"model": "faces", "version": version,
                                                           "device_id": device_id, **facts})
                assert r.status_code == 403 and "is not offered to device" in r.json()["error"], (device_id, version)
                assert "www-authenticate" not in r.headers  # not about the API key
            for body, status, message in (({"version": 9}, 404, "has no version 9"),
                                          ({"model": "nope", "version": 1}, 404, "no model named 'nope'"),
                                          ({"version": None}, 400, "'version' is required")):
                r = device.http.post("/v1/ota/keys", json={"model": "faces", "device_id": inside, **body})
                assert r.status_code == status and message in r.json()["error"], body
            with pytest.raises(Exception, match="decryption failed"):  # another version's key does not fit
                encryption.decrypt(device.data_key(outside, 1), device.http.get(entry["url"]).content,
                                   entry["sha256"].encode())
        finally:
            device.close()


def test_signing_keys_rotate_and_the_old_one_stays_listed_until_retired(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        [first] = ota.keys.signing_keys()
    with env.server() as server:
        synced(server)
        device = DeviceSide(server, env.keys.admin)
        try:
            old_envelope = device.check_raw("phone").json()
            assert old_envelope["key_id"] == first.key_id
            with env.ota() as ota:
                second = ota.keys.rotate_signing_key(overlap=timedelta(0))
            synced(server)
            listed = device.http.get("/v1/ota/signing-keys").json()["keys"]
            assert [(k["key_id"], k["current"]) for k in listed] == [(first.key_id, False), (second.key_id, True)]
            new_envelope = device.check_raw("phone").json()
            assert new_envelope["key_id"] == second.key_id
            trusted = {k["key_id"]: PublicKey.from_b64(k["public_key"]) for k in listed}
            for envelope in (old_envelope, new_envelope):  # a device trusting both accepts both
                verify_envelope(base64.b64decode(envelope["payload"]), base64.b64decode(envelope["signature"]),
                                envelope["key_id"], trusted)
            # A device that only knows the old key refuses what the new one signed.
            with pytest.raises(SignatureError, match="does not trust"):
                verify_envelope(base64.b64decode(new_envelope["payload"]),
                                base64.b64decode(new_envelope["signature"]), new_envelope["key_id"],
                                {first.key_id: trusted[first.key_id]})
            with env.ota() as ota:
                ota.keys.retire_signing_key(first.key_id)
            synced(server)
            assert [k["key_id"] for k in device.http.get("/v1/ota/signing-keys").json()["keys"]] == [second.key_id]
        finally:
            device.close()


def test_metrics_and_the_openapi_document_cover_the_ota_routes(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    with env.server() as server:
        synced(server)
        device = DeviceSide(server, env.keys.admin)
        try:
            payload = device.check("phone")
            device.download(payload["files"]["model.onnx"], device.data_key("phone", 1))
            assert device.check("phone", 1) is None
            assert device.report("phone", 1, inferences=5, inference_errors=1).status_code == 204
        finally:
            device.close()
        with server.client(env.keys.admin) as admin:
            text = admin.get("/metrics").text
            doc = admin.get("/openapi.json").json()
    for line in ('tandem_ota_checks_total{model="faces",outcome="install",version="1"} 1.0',
                 'tandem_ota_checks_total{model="faces",outcome="current",version="1"} 1.0',
                 'tandem_requests_total{model="faces",route="/v1/ota/check",status="204",version="1"} 1.0',
                 'tandem_requests_total{model="",route="/v1/ota/files/{sha256}",status="200",version=""} 1.0',
                 'tandem_ota_downloads_total{kind="file",status="200"} 1.0',
                 'tandem_ota_reports_total{failed="true",model="faces",version="1"} 1.0'):
        assert line in text, line
    size = payload["files"]["model.onnx"]["encrypted"]["size"]
    assert f'tandem_ota_bytes_served_total{{kind="file"}} {float(size)}' in text
    for path, method in (("/v1/ota/check", "post"), ("/v1/ota/files/{sha256}", "get"),
                         ("/v1/ota/deltas/{from_sha256}/{to_sha256}", "get"), ("/v1/ota/keys", "post"),
                         ("/v1/ota/report", "post"), ("/v1/ota/signing-keys", "get")):
        op = doc["paths"][path][method]
        assert op["security"] == [{"bearer": []}] and "`device`" in op["description"], path
        assert {"401", "403", "429"} <= set(op["responses"]), path
    assert set(doc["paths"]["/v1/ota/files/{sha256}"]["get"]["responses"]) >= {"200", "206", "304", "404", "416"}
    assert set(doc["paths"]["/v1/ota/check"]["post"]["responses"]) >= {"200", "204", "400", "404"}
    assert doc["components"]["schemas"]["OtaCheck"]["required"] == ["model"]  # a registered device is itself
    op = doc["paths"]["/v1/devices"]["post"]
    assert {"201", "401", "403", "429"} <= set(op["responses"]) and op["security"] == [{"bearer": []}]


def test_a_server_with_another_master_key_says_so_and_still_serves_inference(env):
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    other = env.settings.model_copy(update={"ota_master_key": SecretStr(base64.b64encode(os.urandom(32)).decode())})
    with running(other) as server, server.client(env.keys.admin) as http:
        for _ in range(2):
            r = http.post("/v1/ota/check", json={"model": "faces", "device_id": "phone"})
            assert r.status_code == 500 and "wrapped with another one" in r.json()["error"]
        with server.client(env.keys.predict) as predict:
            assert predict.get("/v2/models/faces").status_code == 200
