"""Markup and long junk sent as model names, aliases, versions, actions, headers and JSON fields to
OIP v2, TF-Serving, the image endpoint and the OTA routes of a real `tandem serve`: every error answer
quotes it escaped and cut (tandem.errors.quoted), shows no server path, is a 4xx, and carries
nosniff and no-referrer. A page that shows such a message can only show text."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tandem.registry.registry import Registry
from tandem.server.webapp import PACKAGED
from tests.security.target import Target, target

pytestmark = [pytest.mark.integration, pytest.mark.redteam("browser")]

PAYLOADS = ["<img src=x onerror=alert(1)>", '"><script>alert(1)</script>', "<svg/onload=alert(1)>" + "A" * 300]
PIXELS = {"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": [0] * 22500}
JPEG = {"content-type": "image/jpeg"}
DEVICE = {"model": "faces", "device_id": "d-1", "platform": "web", "app_version": "1.0.0"}


def requests_for(p: str) -> list[tuple[str, str, str, dict]]:
    """(name, method, path, httpx arguments) of requests that put ``p`` where a client may."""
    u = quote(p, safe="")
    return [
        # OIP v2
        ("oip-model", "GET", f"/v2/models/{u}", {}),
        ("oip-model-ready", "GET", f"/v2/models/{u}/ready", {}),
        ("oip-alias", "GET", f"/v2/models/faces/versions/{u}", {}),
        ("oip-infer-model", "POST", f"/v2/models/{u}/infer", {"json": {"inputs": [PIXELS]}}),
        ("oip-infer-alias", "POST", f"/v2/models/faces/versions/{u}/infer", {"json": {"inputs": [PIXELS]}}),
        ("oip-input-name", "POST", "/v2/models/faces/infer", {"json": {"inputs": [{**PIXELS, "name": p}]}}),
        ("oip-datatype", "POST", "/v2/models/faces/infer", {"json": {"inputs": [{**PIXELS, "datatype": p}]}}),
        ("oip-shape", "POST", "/v2/models/faces/infer", {"json": {"inputs": [{**PIXELS, "shape": [p]}]}}),
        ("oip-id", "POST", "/v2/models/faces/infer", {"json": {"id": [p], "inputs": [PIXELS]}}),
        ("oip-flag", "POST", "/v2/models/faces/infer",
         {"json": {"inputs": [PIXELS], "parameters": {"binary_data_output": p}}}),
        ("oip-output", "POST", "/v2/models/faces/infer", {"json": {"inputs": [PIXELS], "outputs": [{"name": p}]}}),
        ("oip-header-length", "POST", "/v2/models/faces/infer",
         {"content": b"{}", "headers": {"inference-header-content-length": p}}),
        ("content-encoding", "POST", "/v2/models/faces/infer", {"content": b"{}", "headers": {"content-encoding": p}}),
        # TF-Serving
        ("tf-model", "POST", f"/v1/models/{u}:predict", {"json": {"instances": [1]}}),
        ("tf-status", "GET", f"/v1/models/{u}", {}),
        ("tf-version", "POST", f"/v1/models/faces/versions/{u}:predict", {"json": {"instances": [1]}}),
        ("tf-label", "POST", f"/v1/models/faces/labels/{u}:predict", {"json": {"instances": [1]}}),
        ("tf-action", "POST", f"/v1/models/faces:{u}", {"json": {"instances": [1]}}),
        ("tf-signature", "POST", "/v1/models/faces:predict", {"json": {"signature_name": p, "instances": [1]}}),
        ("tf-input-name", "POST", "/v1/models/faces:predict", {"json": {"inputs": {p: [1], "pixels": [1]}}}),
        # the image endpoint
        ("image-app", "POST", f"/v1/apps/{u}/faces:predict", {"content": b"x", "headers": JPEG}),
        ("image-model", "POST", f"/v1/apps/celebmatch/{u}:predict", {"content": b"x", "headers": JPEG}),
        ("image-no-action", "POST", f"/v1/apps/celebmatch/{u}", {"content": b"x", "headers": JPEG}),
        ("image-alias", "POST", f"/v1/apps/celebmatch/faces:predict?alias={u}", {"content": b"x", "headers": JPEG}),
        ("image-version", "POST", f"/v1/apps/celebmatch/faces:predict?version={u}", {"content": b"x", "headers": JPEG}),
        ("image-top-k", "POST", f"/v1/apps/classify/faces:predict?top_k={u}", {"content": b"x", "headers": JPEG}),
        ("image-detect", "POST", f"/v1/apps/celebmatch/faces:predict?detect={u}", {"content": b"x", "headers": JPEG}),
        ("image-content-type", "POST", "/v1/apps/celebmatch/faces:predict", {"content": b"x", "headers": {"content-type": p}}),
        # OTA
        ("ota-model", "POST", "/v1/ota/check", {"json": {**DEVICE, "model": p}}),
        ("ota-channel", "POST", "/v1/ota/check", {"json": {**DEVICE, "channel": p}}),
        ("ota-device-id", "POST", "/v1/ota/check", {"json": {**DEVICE, "device_id": p}}),
        ("ota-platform", "POST", "/v1/ota/check", {"json": {**DEVICE, "platform": p}}),
        ("ota-app-version", "POST", "/v1/ota/check", {"json": {**DEVICE, "app_version": p}}),
        ("ota-precision", "POST", "/v1/ota/check", {"json": {**DEVICE, "precision": p}}),
        ("ota-version", "POST", "/v1/ota/check", {"json": {**DEVICE, "version": p}}),
        ("ota-keys-model", "POST", "/v1/ota/keys", {"json": {**DEVICE, "model": p, "version": 1}}),
        ("ota-report-model", "POST", "/v1/ota/report", {"json": {**DEVICE, "model": p, "version": 1}}),
        ("ota-file", "GET", f"/v1/ota/files/{u}", {}),
        # anything else
        ("no-route", "GET", f"/v3/{u}", {}),
        ("app-not-built", "GET", f"/app/{u}", {}),
    ]


@dataclass
class Hostile:
    server: Target
    home: Path
    web_dir: Path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, gallery_bundle, tiny_bundles):
    """A real `tandem serve` with faces v1 (enrolled for celebmatch) and v2, released on production,
    loading models only when asked, and an empty web folder: /app/ answers "not built", which once
    named the folder."""
    home = tmp_path_factory.mktemp("home")
    web_dir = tmp_path_factory.mktemp("no-web-app")
    with target(home, [gallery_bundle, tiny_bundles["v2"]], web_dir=web_dir, preload=0) as server:
        yield Hostile(server, home, web_dir)


def server_paths(home: Path, web_dir: Path) -> list[str]:
    return sorted({str(home), str(home.resolve()), str(web_dir), str(web_dir.resolve()), str(PACKAGED)})


@pytest.mark.parametrize("payload", PAYLOADS, ids=["img", "script", "long"])
def test_every_error_quotes_client_input_as_text(hostile, payload):
    server, home = hostile.server, hostile.home
    checked = []
    # The admin key may call every route, the OTA ones included (naming the device in the body).
    with server.client(server.keys["admin"]) as http:
        for name, method, path, kwargs in requests_for(payload):
            r = http.request(method, path, **kwargs)
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json", name
            assert r.headers["x-content-type-options"] == "nosniff", name
            assert r.headers["referrer-policy"] == "no-referrer", name
            error = r.json()["error"]
            assert isinstance(error, str) and error, name
            # No markup at all: the payload's < and > arrive as \x3c and \x3e, quoted and cut.
            assert "<" not in error and ">" not in error, (name, error)
            assert "onerror=alert(1)\\x3e" in error or "onerror" not in error, (name, error)
            assert "A" * 100 not in error, (name, error)
            for p in server_paths(home, hostile.web_dir):
                assert p not in error, (name, error)
            checked.append(name)
    assert len(checked) == len(requests_for(payload))


def test_a_message_about_a_stored_file_names_no_server_path(hostile):
    """Version 2 lost a file from the artifact store: the registry's message (written for the CLI)
    names the store's folder; the HTTP answer says TANDEM_HOME/… and the object's sha256 instead."""
    server, home = hostile.server, hostile.home
    with Registry.open(server.settings) as reg:
        info = next(v for v in reg.versions("faces") if v.version == 2)
        sha = info.files["model.onnx"]
        stored = reg.store.path(sha)
    shutil.rmtree(home / "bundles" / "faces" / "2", ignore_errors=True)
    stored.unlink()
    with server.client(server.keys["predict"]) as http:
        r = http.get("/v2/models/faces/versions/2")
    error = r.json()["error"]
    assert r.status_code == 500, r.text
    assert sha in error and "TANDEM_HOME/…" in error, error
    for p in server_paths(home, hostile.web_dir):
        assert p not in error, error


def test_the_page_and_its_errors_carry_the_security_headers(hostile):
    with hostile.server.client() as http:
        for path in ("/app", "/app/", "/app/sw.js", "/app/missing"):
            r = http.get(path)
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
            assert r.headers["x-content-type-options"] == "nosniff", path
        # Only the page gets the CSP; every answer gets nosniff and no-referrer.
        r = http.get("/v2/health/live")
        assert "content-security-policy" not in r.headers
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
