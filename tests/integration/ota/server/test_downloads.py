"""The OTA download routes on a real server: ETags, 304, resuming with Range, 416, delta patches that
rebuild the file, and objects that are unknown, not offered, or damaged in the store; with the objects in
a local folder and in a bucket of a real S3-compatible server (streamed from it in ranges)."""

from __future__ import annotations

import hashlib

import pytest

from tandem.delta import apply
from tandem.registry.ota.objects import delta_aad
from tandem.security import encryption
from tests.integration.ota.server.helpers import DeviceSide, Env, new_env, synced
from tests.integration.registry_backends import damage

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def env(request, tmp_path, ota_bundles) -> Env:
    """The package's env (versions 1-3 pushed, a key per scope), its objects in a folder or a bucket."""
    if request.param == "local":
        return new_env(tmp_path / "home", ota_bundles)
    s3 = request.getfixturevalue("s3")
    return new_env(tmp_path / "home", ota_bundles, **s3.settings(s3.new_bucket()))


@pytest.fixture()
def offered(env):
    """A server offering v1, then v2 to everyone; a device's payload for v2 from v1, and v2's data key."""
    with env.ota() as ota:
        ota.releases.release("faces", 1)
        ota.releases.release("faces", 2)
    with env.server() as server:
        synced(server)
        device = DeviceSide(server, env.keys.admin)
        try:
            payload = device.check("phone", 1)
            assert payload is not None and payload["version"] == 2
            yield server, device, payload, device.data_key("phone", 2)
        finally:
            device.close()


def test_a_cut_download_resumes_with_range_and_decrypts(offered):
    _server, device, payload, key = offered
    entry = payload["files"]["model.onnx"]
    blob_sha, size = entry["encrypted"]["sha256"], entry["encrypted"]["size"]
    half = bytearray()
    with device.http.stream("GET", entry["url"]) as r:  # the connection drops half way
        assert r.status_code == 200 and r.headers["etag"] == f'"{blob_sha}"'
        assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(size)
        assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
        for chunk in r.iter_raw(4096):
            half += chunk
            if len(half) >= size // 2:
                break
    rest = device.http.get(entry["url"], headers={"range": f"bytes={len(half)}-", "if-range": f'"{blob_sha}"'})
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes {len(half)}-{size - 1}/{size}"
    blob = bytes(half) + rest.content
    assert hashlib.sha256(blob).hexdigest() == blob_sha
    plain = encryption.decrypt(key, blob, entry["sha256"].encode())
    assert hashlib.sha256(plain).hexdigest() == entry["sha256"] and len(plain) == entry["size"]

    # If-Range with another ETag: the part held is of something else, so the whole object comes back.
    r = device.http.get(entry["url"], headers={"range": "bytes=10-", "if-range": '"other"'})
    assert r.status_code == 200 and len(r.content) == size
    r = device.http.get(entry["url"], headers={"range": "bytes=-16"})
    assert r.status_code == 206 and r.content == blob[-16:]
    r = device.http.get(entry["url"], headers={"range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}" and "outside" in r.json()["error"]
    r = device.http.get(entry["url"], headers={"if-none-match": f'"{blob_sha}"'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == f'"{blob_sha}"'
    r = device.http.head(entry["url"])
    assert r.status_code == 200 and r.headers["content-length"] == str(size) and r.content == b""


def test_the_manifest_and_the_delta_rebuild_the_new_version(env, offered):
    _server, device, payload, key = offered
    manifest = device.download(payload["files"]["manifest.json"], key)
    assert hashlib.sha256(manifest).hexdigest() == payload["manifest_sha256"]
    entry = payload["files"]["model.onnx"]
    delta = entry["delta"]
    r = device.http.get(delta["url"])
    assert r.status_code == 200 and r.headers["etag"] == f'"{delta["sha256"]}"'
    assert hashlib.sha256(r.content).hexdigest() == delta["sha256"] and len(r.content) == delta["size"]
    patch = encryption.decrypt(key, r.content, delta_aad(delta["from_sha256"], entry["sha256"]))
    with env.ota() as ota:
        old = ota.reg.store.read(delta["from_sha256"])  # what the device holds of v1
    rebuilt = apply(old, patch)
    assert hashlib.sha256(rebuilt).hexdigest() == entry["sha256"]
    assert rebuilt == device.download(entry, key)  # byte for byte the full file


def test_only_what_a_payload_names_is_served(env, offered):
    _server, device, payload, _key = offered
    entry = payload["files"]["model.onnx"]
    with env.ota() as ota:
        unreleased = ota.reg.get("faces", 3)
    for sha in (entry["sha256"],  # the plaintext model is in the store, but is never sent
                unreleased.manifest_sha256, unreleased.files["model.onnx"], "0" * 64, "not-a-sha"):
        r = device.http.get(f"/v1/ota/files/{sha}")
        assert r.status_code == 404 and "download only the URLs a signed payload" in r.json()["error"], sha
    r = device.http.get(f"/v1/ota/deltas/{entry['sha256']}/{entry['encrypted']['sha256']}")
    assert r.status_code == 404 and "no delta patch" in r.json()["error"]
    assert device.http.get(entry["url"], headers={"authorization": ""}).status_code == 401


def test_a_damaged_object_is_refused_and_made_again_by_releasing(env, offered):
    server, device, payload, key = offered
    entry = payload["files"]["model.onnx"]
    with env.ota() as ota:
        damage(ota.reg.store, entry["encrypted"]["sha256"])  # one flipped byte of ciphertext, same size
    r = device.http.get(entry["url"])
    assert r.status_code == 500 and "is damaged" in r.json()["error"] and "tandem release" in r.json()["error"]
    with env.ota() as ota:
        ota.releases.release("faces", 2)  # releasing again re-makes what is damaged
    synced(server)
    fresh = device.check("phone", 1)["files"]["model.onnx"]
    assert fresh["encrypted"]["sha256"] != entry["encrypted"]["sha256"] and fresh["sha256"] == entry["sha256"]
    assert hashlib.sha256(device.download(fresh, key)).hexdigest() == entry["sha256"]
