"""OTA bytes without the Python server in the path (docs/ota.md, "Downloads from storage or a CDN"): a real
server whose signed answers send a real device SDK to presigned URLs of a bucket on a real S3-compatible
server (moto's), or to a CDN (a static file server over the folder the server publishes to), and the
device falling back to the server's own route when the direct URL fails."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tandem.device import ModelUpdater
from tandem.protocol.origins import origin
from tandem.registry.registry import Registry
from tandem.testing.processes import until
from tandem.testing.static import StaticServer, static_server
from tests.integration.ota.server.helpers import DeviceSide, Env, new_env, synced
from tests.integration.server.serving import Running

pytestmark = pytest.mark.integration
PRESIGN_S = 60


class Network(httpx.BaseTransport):
    """The device's real network, every request noted (URL, headers, status); ``rewrite`` may change an
    answer's body (an attacker in between) and ``refuse`` answer for the far side instead."""

    def __init__(self, rewrite: Callable[[httpx.Request, bytes], bytes | None] | None = None,
                 refuse: Callable[[httpx.Request], httpx.Response | None] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[str, dict[str, str], int]] = []
        self.rewrite, self.refuse = rewrite, refuse

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = (self.refuse(request) if self.refuse else None) or self.inner.handle_request(request)
        self.seen.append((str(request.url), dict(request.headers), response.status_code))
        if self.rewrite is not None and request.url.path == "/v1/ota/check":
            body = response.read()
            new = self.rewrite(request, body)
            return httpx.Response(response.status_code, headers=response.headers, content=new or body)
        return response

    def to(self, origin_: str) -> list[tuple[str, dict[str, str], int]]:
        return [s for s in self.seen if origin(s[0]) == origin_]


def expired_as_s3_says(late_by_s: float) -> Callable[[httpx.Request], httpx.Response | None]:
    """What S3 answers a presigned URL past its X-Amz-Date + X-Amz-Expires (moto does not check expiry), for a
    device that uses its answer ``late_by_s`` seconds after it got it (deferred, or a slow first file)."""

    def refuse(request: httpx.Request) -> httpx.Response | None:
        query = parse_qs(urlsplit(str(request.url)).query)
        if "X-Amz-Expires" not in query:
            return None
        signed = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
        if time.time() + late_by_s <= signed + int(query["X-Amz-Expires"][0]):
            return None
        return httpx.Response(403, headers={"content-type": "application/xml"}, content=(
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
            b"<Message>Request has expired</Message></Error>"))

    return refuse


@dataclass(frozen=True)
class Served:
    env: Env
    server: Running
    admin: DeviceSide

    def updater(self, store: Path, network: Network) -> ModelUpdater:
        return ModelUpdater(self.server.url, self.env.keys.device, "faces", trusted_keys=self.admin.trusted.values(),
                            store_dir=store, platform="android", os_version="14", app_version="2.4.0", ram_mb=4096,
                            timeout=30, transport=network)

    def downloads(self) -> float:
        """GET /v1/ota/files and /v1/ota/deltas answers this server sent, as its metrics count them."""
        text = self.admin.http.get("/metrics").text
        return sum(float(v) for v in re.findall(r"^tandem_ota_downloads_total\{[^}]*\} (\S+)$", text, re.M))

    def payload(self, device_id: str = "probe") -> dict:
        found = self.admin.check(device_id, schema=2)
        assert found is not None
        return found


@contextlib.contextmanager
def serving(env: Env) -> Iterator[Served]:
    with env.ota() as ota:
        ota.releases.release("faces", 1)
    with env.server() as server:
        synced(server)
        admin = DeviceSide(server, env.keys.admin)
        try:
            yield Served(env, server, admin)
        finally:
            admin.close()


@pytest.fixture(scope="module")
def presigned(tmp_path_factory, ota_bundles, s3) -> Iterator[tuple[Served, str]]:
    """A server whose answers send devices to presigned URLs of its bucket on moto; moto's origin."""
    env = new_env(tmp_path_factory.mktemp("presigned") / "home", ota_bundles[:1], ota_downloads="presigned",
                  ota_presign_s=PRESIGN_S, **s3.settings(s3.new_bucket()))
    with serving(env) as served:
        yield served, origin(s3.endpoint)


def test_a_device_installs_straight_from_the_bucket(presigned, tmp_path):
    served, bucket = presigned
    payload = served.payload()
    assert payload["download_origins"] == [bucket]
    for name, entry in payload["files"].items():
        (url,) = entry["mirrors"]
        query = parse_qs(urlsplit(url).query)
        # Short-lived, for GET of that one object, and nothing secret in it: the key's id and the signature only.
        assert query["X-Amz-Expires"] == [str(PRESIGN_S)] and query["X-Amz-SignedHeaders"] == ["host"]
        assert query["X-Amz-Credential"][0].startswith("tandem-test/")
        assert "tandem-test-secret" not in url and "@" not in urlsplit(url).netloc
        blob = entry["encrypted"]["sha256"] if "encrypted" in entry else entry["sha256"]
        assert urlsplit(url).path.endswith(f"/{blob[:2]}/{blob[2:]}"), name
        assert entry["url"].startswith("/v1/ota/files/")  # the server's route stays, for the fallback

    before, network = served.downloads(), Network()
    with served.updater(tmp_path / "store", network) as u:
        result = u.update()
        assert result.status == "installed" and result.version == 1
        assert u.load().version == 1
    assert served.downloads() == before, "no byte came through the Tandem server's download routes"
    from_bucket = network.to(bucket)
    assert len(from_bucket) == len(payload["files"]) and all(status == 200 for _, _, status in from_bucket)
    assert all("authorization" not in headers for _, headers, _ in from_bucket), "the device credential stays home"
    assert not [u for u, _, _ in network.seen if "/v1/ota/files/" in u]


def test_an_expired_presigned_url_falls_back_to_the_server(presigned, tmp_path):
    served, bucket = presigned
    before = served.downloads()
    network = Network(refuse=expired_as_s3_says(late_by_s=2 * PRESIGN_S))
    with served.updater(tmp_path / "store", network) as u:
        result = u.update()
        assert result.status == "installed" and result.version == 1
    refused = network.to(bucket)
    assert refused and all(status == 403 for _, _, status in refused)
    files = len(served.payload()["files"])
    assert served.downloads() == before + files, "every file came from the server's own route instead"


def test_a_cut_download_resumes_from_the_bucket_with_range(presigned, tmp_path):
    served, bucket = presigned
    entry = served.payload()["files"]["model.onnx"]
    blob_sha, size = entry["encrypted"]["sha256"], entry["encrypted"]["size"]
    with Registry.open(served.env.settings.registry) as reg:
        blob = reg.store.read(blob_sha)
    half = size // 2
    before, network = served.downloads(), Network()
    with served.updater(tmp_path / "store", network) as u:
        # What a download cut half way leaves (in this process or an earlier one).
        part = u.store.part_path("faces", blob_sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(blob[:half])
        result = u.update()
        assert result.status == "installed" and result.version == 1
    resumed = [(headers.get("range"), status) for url, headers, status in network.to(bucket)
               if urlsplit(url).path.endswith(blob_sha[2:])]
    assert resumed == [(f"bytes={half}-", 206)]
    manifest_size = served.payload()["files"]["manifest.json"]["size"]
    assert result.downloaded_bytes == manifest_size + size - half
    assert served.downloads() == before


def test_mirrors_forged_outside_the_signed_payload_change_nothing(presigned, tmp_path):
    served, bucket = presigned
    evil = "http://127.0.0.1:9"  # nothing listens there; a request to it would show in the network's log

    def forge(_request: httpx.Request, body: bytes) -> bytes:
        envelope = json.loads(body)
        files = json.loads(base64.b64decode(envelope["payload"]))["files"]
        envelope["download_origins"] = [evil]
        envelope["files"] = {n: {"mirrors": [f"{evil}/{n}"]} for n in files}
        return json.dumps(envelope).encode()

    network = Network(rewrite=forge)
    with served.updater(tmp_path / "store", network) as u:
        assert u.update().status == "installed"
    assert not network.to(evil) and network.to(bucket)


def test_a_cdn_serves_what_the_server_published_and_a_404_falls_back(tmp_path, ota_bundles):
    public = tmp_path / "public"
    with static_server(public) as cdn:
        env = new_env(tmp_path / "home", ota_bundles[:1], ota_downloads="cdn", ota_download_base=cdn.url + "/",
                      ota_publish=str(public))
        with serving(env) as served:
            # Published in the background once the server has read the release; named once published.
            payload = until(lambda: _all_mirrored(served.payload()), "the release's objects published for the CDN",
                            timeout=30)
            assert payload["download_origins"] == [cdn.url]
            published = {p.parent.name + p.name for p in public.glob("??/*")}
            blobs = {e["encrypted"]["sha256"] if "encrypted" in e else e["sha256"] for e in payload["files"].values()}
            assert published == blobs, "the CDN's origin holds what devices download, no plaintext model file"
            assert payload["files"]["model.onnx"]["sha256"] not in published

            before = served.downloads()
            with served.updater(tmp_path / "one", Network()) as u:
                assert u.update().status == "installed"
            assert served.downloads() == before
            assert sorted(status for _, _, status in _gets(cdn)) == [200] * len(blobs)

            # The CDN lost the model file (a purge, an origin not yet in sync): 404, and the server sends it.
            model_blob = payload["files"]["model.onnx"]["encrypted"]["sha256"]
            (public / model_blob[:2] / model_blob[2:]).unlink()
            with served.updater(tmp_path / "two", Network()) as u:
                result = u.update()
                assert result.status == "installed" and u.load().version == 1
            assert served.downloads() == before + 1
            assert ("GET", f"/{model_blob[:2]}/{model_blob[2:]}", 404) in cdn.requests


def _all_mirrored(payload: dict) -> dict | None:
    return payload if all(f.get("mirrors") for f in payload["files"].values()) else None


def _gets(cdn: StaticServer) -> list[tuple[str, str, int]]:
    return [r for r in cdn.requests if r[0] == "GET"]
