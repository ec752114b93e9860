"""Downloads from storage or a CDN (docs/ota.md): what a device accepts of a payload's mirrors and
download_origins, how origins are written, and how the server adds mirrors to a payload's files without
handing out a presigned URL about to expire."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tandem.device.ota_client import OtaClient, Transfer
from tandem.device.payload import verify
from tandem.errors import ConfigError, SignatureError, Unavailable
from tandem.protocol.origins import is_origin, origin
from tandem.registry.artifacts import LocalStore
from tandem.server.ota import mirrors as mirrors_mod
from tandem.server.ota.mirrors import Cdn, Presigned, mirrored, open_mirrors
from tandem.settings import OtaSettings, RegistrySettings
from tests.unit.test_ota_payload import SHA, TRUSTED, envelope, expected, payload

BUCKET = "https://models.s3.eu-west-1.amazonaws.com"
SIGNED = f"{BUCKET}/objects/aa/{'a' * 62}?X-Amz-Expires=900&X-Amz-Signature=0f"


def with_mirrors(**changes) -> dict:
    p = payload(download_origins=[BUCKET, "https://cdn.example.com"])
    p["files"]["manifest.json"]["mirrors"] = [SIGNED]
    p["files"]["model.onnx"]["mirrors"] = ["https://cdn.example.com/tandem/cc/" + "c" * 62]
    p["files"]["model.onnx"]["delta"]["mirrors"] = ["https://cdn.example.com/tandem/ff/" + "f" * 62]
    p.update(changes)
    return p


def test_signed_mirrors_on_signed_origins_are_read():
    p = verify(envelope(with_mirrors()), TRUSTED, expected())
    assert p.files["manifest.json"].mirrors == [SIGNED]
    assert p.files["model.onnx"].delta.mirrors[0].startswith("https://cdn.example.com/")
    assert p.download_origins == [BUCKET, "https://cdn.example.com"]
    # A payload without them (an older server, TANDEM_OTA_DOWNLOADS=server) reads as before: server routes only.
    plain = verify(envelope(payload()), TRUSTED, expected())
    assert plain.download_origins == [] and plain.files["model.onnx"].mirrors == []


@pytest.mark.parametrize(("mirror", "reason"), [
    ("https://evil.example.net/aa/" + "a" * 62, "'https://evil.example.net' is not among the payload's download_origins"),
    ("https://cdn.example.com:8443/aa", "'https://cdn.example.com:8443' is not among"),  # another port: another origin
    ("http://cdn.example.com/aa", "'http://cdn.example.com' is not among"),  # another scheme too
    ("https://user:pw@cdn.example.com/aa", "names a user"),
    ("ftp://cdn.example.com/aa", "is not http"),
    ("/v1/ota/files/" + "a" * 64, "names no host|is not http"),
    ("https://cdn.example.com/aa#x", "has a fragment"),
])
def test_a_mirror_outside_the_signed_origins_refuses_the_answer(mirror, reason):
    p = with_mirrors()
    p["files"]["model.onnx"]["mirrors"] = [mirror]
    with pytest.raises(SignatureError, match=reason):
        verify(envelope(p), TRUSTED, expected())


def test_a_delta_mirror_is_held_to_the_same_origins():
    p = with_mirrors(download_origins=[BUCKET])  # the CDN left out
    p["files"]["model.onnx"]["mirrors"] = []
    with pytest.raises(SignatureError, match="not among the payload's download_origins"):
        verify(envelope(p), TRUSTED, expected())


@pytest.mark.parametrize("bad", ["https://CDN.example.com", "https://cdn.example.com/", "https://cdn.example.com:443",
                                 "cdn.example.com", "https://cdn.example.com/path"])
def test_download_origins_must_be_written_as_origins(bad):
    with pytest.raises(SignatureError, match="not origins written as"):
        verify(envelope(with_mirrors(download_origins=[bad])), TRUSTED, expected())


def test_unsigned_mirrors_beside_the_payload_change_nothing():
    forged = envelope(payload(), download_origins=["https://evil.example.net"],
                      files={"model.onnx": {"mirrors": ["https://evil.example.net/x"]}})
    p = verify(forged, TRUSTED, expected())
    assert p.download_origins == [] and all(not f.mirrors for f in p.files.values())


def test_origins_are_written_one_way():
    assert origin("HTTPS://Cdn.Example.com:443/a/b?x=1") == "https://cdn.example.com"
    assert origin("http://127.0.0.1:9000/bucket/key") == "http://127.0.0.1:9000"
    assert origin("http://[::1]:80/x") == "http://[::1]"
    assert is_origin("https://cdn.example.com") and not is_origin("https://cdn.example.com/")
    for bad in ("https:///x", "https://a b/x", "https://h:99999/x", "javascript:alert(1)"):
        with pytest.raises(ValueError, match="download URL"):
            origin(bad)


class FakeBucket:
    """A presigner that counts its signatures (obstore signs locally; the real one is tested on moto)."""

    location = "s3://models/objects"

    def __init__(self) -> None:
        self.signed = 0

    def presign(self, sha256: str, lifetime: timedelta) -> str:
        self.signed += 1
        return f"{BUCKET}/objects/{sha256[:2]}/{sha256[2:]}?X-Amz-Expires={int(lifetime.total_seconds())}&n={self.signed}"


def test_a_presigned_url_is_reused_for_half_its_lifetime_only(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(mirrors_mod.time, "monotonic", lambda: clock[0])
    bucket = FakeBucket()
    presigned = Presigned(bucket, 900)
    first = presigned.url(SHA)
    assert first is not None and "X-Amz-Expires=900" in first
    clock[0] += 449
    assert presigned.url(SHA) == first and bucket.signed == 1
    clock[0] += 2  # past half the lifetime: no answer hands it out any more
    assert presigned.url(SHA) != first and bucket.signed == 2


def test_a_bucket_that_cannot_presign_leaves_devices_the_server():
    class Refusing(FakeBucket):
        def presign(self, sha256: str, lifetime: timedelta) -> str:
            raise Unavailable("the credentials could not be loaded")

    out = mirrored(payload()["files"], Presigned(Refusing(), 60))
    assert out.origins == [] and all("mirrors" not in f for f in out.files.values())


def test_mirrored_files_leave_the_cached_files_alone():
    files = payload()["files"]
    before = repr(files)
    out = mirrored(files, Presigned(FakeBucket(), 60))
    assert repr(files) == before, "the payload files a worker caches per generation must never hold a URL"
    assert out.origins == [BUCKET] and out.unpublished == []
    assert out.counts == {"manifest": 1, "file": 1, "delta": 1}
    assert out.files["model.onnx"]["mirrors"][0].startswith(f"{BUCKET}/objects/cc/")  # the encrypted blob's
    assert out.files["model.onnx"]["delta"]["mirrors"][0].startswith(f"{BUCKET}/objects/ff/")
    assert out.files["model.onnx"]["url"] == files["model.onnx"]["url"]  # the server's route stays: the fallback


def test_a_cdn_names_only_what_it_was_given(tmp_path: Path):
    source, target = LocalStore(tmp_path / "objects"), LocalStore(tmp_path / "public")
    sha = source.put_bytes(b"encrypted blob")
    cdn = Cdn("https://cdn.example.com/tandem", source, target)
    assert cdn.url(sha) is None  # not published yet: devices use the server meanwhile
    assert cdn.publish(sha) and not cdn.publish(sha)
    assert cdn.url(sha) == f"https://cdn.example.com/tandem/{sha[:2]}/{sha[2:]}"
    assert (tmp_path / "public" / sha[:2] / sha[2:]).read_bytes() == b"encrypted blob"


@pytest.mark.parametrize(("ota", "reason"), [
    ({"ota_downloads": "presigned"}, "needs the artifacts in|presigned URLs of an S3 bucket"),
    ({"ota_downloads": "cdn"}, "needs TANDEM_OTA_DOWNLOAD_BASE"),
    ({"ota_downloads": "cdn", "ota_download_base": "https://u:p@cdn.example.com"}, "names a user"),
    ({"ota_downloads": "cdn", "ota_download_base": "https://cdn.example.com/t?x=1"}, "has a query"),
    ({"ota_downloads": "cdn", "ota_download_base": "https://cdn.example.com"}, "needs TANDEM_OTA_PUBLISH"),
    ({"ota_downloads": "cdn", "ota_download_base": "https://cdn.example.com", "ota_publish": "public"},
     "needs TANDEM_OTA_PUBLISH"),
])
def test_settings_that_do_not_fit_together_are_refused(tmp_path: Path, ota, reason):
    store = LocalStore(tmp_path / "objects")
    with pytest.raises(ConfigError, match=reason):
        open_mirrors(OtaSettings(**ota), RegistrySettings(home=tmp_path), store)


def test_the_artifact_store_is_never_the_cdn_origin(tmp_path: Path):
    store = LocalStore(tmp_path / "objects")
    for where in (tmp_path / "objects", tmp_path):  # the store itself, or a folder holding it
        settings = OtaSettings(ota_downloads="cdn", ota_download_base="https://cdn.example.com",
                               ota_publish=str(where))
        with pytest.raises(ConfigError, match="plaintext bundle files a CDN must never serve"):
            open_mirrors(settings, RegistrySettings(home=tmp_path), store)
    ok = OtaSettings(ota_downloads="cdn", ota_download_base="https://cdn.example.com/", ota_publish=str(tmp_path / "pub"))
    cdn = open_mirrors(ok, RegistrySettings(home=tmp_path), store)
    assert isinstance(cdn, Cdn) and cdn.base == "https://cdn.example.com"
    assert open_mirrors(OtaSettings(), RegistrySettings(home=tmp_path), store) is None


# --- the device's downloads from mirrors (tandem.device.ota_client), against a readable fake network ---

BLOB = b"encrypted bytes " * 1000
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
SERVER_URL = "https://updates.example.com"


class Far:
    """The far side of every request: the update server, a CDN, another host. Notes what it was asked."""

    def __init__(self, routes: dict[str, object]) -> None:
        self.routes = routes  # URL -> bytes (sent, with Range), an int status, or ("redirect", location)
        self.asked: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.asked.append((url, dict(request.headers)))
        answer = self.routes.get(url, 404)
        if isinstance(answer, tuple):
            return httpx.Response(302, headers={"location": answer[1]})
        if isinstance(answer, int):
            return httpx.Response(answer, content=b"<Error><Code>AccessDenied</Code></Error>")
        start = int(request.headers.get("range", "bytes=0-")[6:].rstrip("-"))
        if start:
            return httpx.Response(206, content=answer[start:],
                                  headers={"content-range": f"bytes {start}-{len(answer) - 1}/{len(answer)}"})
        return httpx.Response(200, content=answer)


def fetch(tmp_path: Path, far: Far, mirrors: list[str], origins: list[str], part_bytes: bytes = b"") -> bytes:
    client = OtaClient(SERVER_URL, "tdk_app", httpx.Timeout(5), httpx.MockTransport(far), credential=lambda: "tdd_me")
    part = tmp_path / f"{BLOB_SHA}.part"
    if part_bytes:
        part.write_bytes(part_bytes)
    try:
        return client.download(f"/v1/ota/files/{BLOB_SHA}", part, len(BLOB), BLOB_SHA, "model.onnx",
                               Transfer(len(BLOB), None), mirrors, origins)
    finally:
        client.close()


SERVER_FILE = f"{SERVER_URL}/v1/ota/files/{BLOB_SHA}"
CDN = "https://cdn.example.com"


def test_a_mirror_gets_no_credential_and_the_server_is_not_asked(tmp_path):
    far = Far({f"{CDN}/a": BLOB, SERVER_FILE: BLOB})
    assert fetch(tmp_path, far, [f"{CDN}/a"], [CDN], part_bytes=BLOB[:100]) == BLOB
    assert [u for u, _ in far.asked] == [f"{CDN}/a"]
    headers = far.asked[0][1]
    assert "authorization" not in headers and headers["range"] == "bytes=100-"


def test_a_redirect_is_followed_only_to_a_signed_origin(tmp_path):
    edge = "https://edge.example.com"
    far = Far({f"{CDN}/a": ("redirect", f"{edge}/a"), f"{edge}/a": BLOB, SERVER_FILE: BLOB})
    assert fetch(tmp_path, far, [f"{CDN}/a"], [CDN, edge]) == BLOB
    assert [u for u, _ in far.asked] == [f"{CDN}/a", f"{edge}/a"]
    far.asked.clear()
    (tmp_path / f"{BLOB_SHA}.part").unlink(missing_ok=True)
    assert fetch(tmp_path, far, [f"{CDN}/a"], [CDN]) == BLOB  # edge not signed: not followed, the server sends it
    assert [u for u, _ in far.asked] == [f"{CDN}/a", SERVER_FILE]
    assert far.asked[1][1]["authorization"] == "Bearer tdd_me"


@pytest.mark.parametrize("mirror_answer", [403, 404, 503, b"wrong bytes " * 1000, BLOB[:500]])
def test_a_failing_mirror_falls_back_to_the_server(tmp_path, mirror_answer):
    far = Far({f"{CDN}/a": mirror_answer, SERVER_FILE: BLOB})
    assert fetch(tmp_path, far, [f"{CDN}/a"], [CDN]) == BLOB
    assert far.asked[-1][0] == SERVER_FILE
