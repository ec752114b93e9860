"""Someone between the device and a real `tandem serve` (or a hostile server), against the device SDK:
answers replayed to another device, later, or to push a device back; an unsigned "nothing new" to hold
it; tampered, huge and bomb answers. And spoofed forwarding headers against the brute-force guard
(issue 14, sections 2 and 3)."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tandem.device import ModelUpdater, payload
from tandem.errors import AnswerTooLarge, ChecksumError, SignatureError
from tandem.security.signing import PublicKey
from tests.security.target import target

pytestmark = [pytest.mark.integration, pytest.mark.redteam("network")]

MIB = 1 << 20
Rewrite = Callable[[httpx.Request], httpx.Response | None]


class Middle(httpx.BaseTransport):
    """The network between device and server: passes each request on to the real server, unless
    ``answer`` answers it first; keeps every check answer the server gave (``seen``)."""

    def __init__(self, answer: Rewrite | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.answer = answer
        self.seen: list[bytes] = []

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.answer is not None:
            forged = self.answer(request)
            if forged is not None:
                return forged
        response = self.inner.handle_request(request)
        if request.url.path == "/v1/ota/check":
            body = response.read()
            self.seen.append(body)
            return httpx.Response(response.status_code, headers=response.headers, content=body)
        return response


class Endless(httpx.SyncByteStream):
    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            self.sent += MIB
            yield b"{" * MIB


class Chunks(httpx.SyncByteStream):
    """Bytes as a network delivers them: in pieces, not read yet."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 16384):
            yield self.data[i : i + 16384]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bundles):
    releases = (("faces", 1), ("faces", 1, {"channel": "roll"}),
                ("faces", 1, {"channel": "old-apps"}), ("faces", 2, {"channel": "old-apps", "min_app_version": "2.0"}))
    with target(tmp_path_factory.mktemp("network"), [tiny_bundles["v1"], tiny_bundles["v2"]], releases,
                alias_poll_s=0.05) as t:
        with t.client(t.keys["admin"]) as http:
            t.trusted = [PublicKey.from_b64(k["public_key"]) for k in http.get("/v1/ota/signing-keys").json()["keys"]]
        yield t


def updater(server, store: Path, middle: Middle | None = None, **kw) -> ModelUpdater:
    return ModelUpdater(server.url, server.keys["device"], "faces", trusted_keys=server.trusted, store_dir=store,
                        app_version=kw.pop("app_version", "2.4.0"), platform="android", timeout=30,
                        transport=middle or Middle(), **kw)


def files_of(store: Path) -> list[tuple[str, bytes]]:
    return sorted((p.relative_to(store).as_posix(), p.read_bytes()) for p in (store / "faces" / "versions").rglob("*")
                  if p.is_file())


def on_check(body: bytes, status: int = 200) -> Rewrite:
    def answer(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/v1/ota/check":
            return httpx.Response(status, content=body, headers={"content-type": "application/json"})
        return None
    return answer


def test_an_answer_issued_to_another_device_is_refused(server, tmp_path):
    other = Middle()
    with updater(server, tmp_path / "other", other) as u:
        assert u.update().version == 1
    stolen = other.seen[-1]  # genuine, signed by the server, for the other device
    with updater(server, tmp_path / "me", Middle(on_check(stolen))) as u:
        with pytest.raises(SignatureError, match="issued to device"):
            u.update()
        assert u.installed_version() is None


def test_an_expired_answer_is_refused(server, tmp_path):
    """A genuine answer, captured and played back two hours later (the server signs them for 1 h)."""
    middle = Middle()
    with updater(server, tmp_path / "store", middle) as u:
        u.update()
        me, installed, last = u.device_id, u.installed_version(), u.store.last_sequence("faces")
    envelope = middle.seen[-1]
    p = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    trusted = {k.key_id: k for k in server.trusted}
    later = payload.Payload.model_validate(p).issued_at + timedelta(hours=2)
    with pytest.raises(SignatureError, match="expired"):
        payload.verify(envelope, trusted, payload.Expected("faces", "production", me, installed, last, later))
    payload.verify(envelope, trusted, payload.Expected("faces", "production", me, installed, last))  # now: fine


def test_a_replayed_older_answer_cannot_push_a_device_back(server, tmp_path):
    middle = Middle()
    with updater(server, tmp_path / "store", middle, channel="roll") as u:
        assert u.update().version == 1
        old = middle.seen[-1]  # the genuine "install v1" answer, for this very device
        with server.ota() as ota:
            ota.releases.release("faces", 2, channel="roll")
        deadline = time.monotonic() + 30
        while u.update().version != 2:
            assert time.monotonic() < deadline, "the server did not offer v2"
            time.sleep(0.1)
    before = files_of(tmp_path / "store")
    with updater(server, tmp_path / "store", Middle(on_check(old)), channel="roll") as u:
        with pytest.raises(SignatureError, match="replayed"):
            u.update()
        assert u.installed_version() == 2
    assert files_of(tmp_path / "store") == before


def test_claiming_an_old_app_earns_a_signed_stay_not_a_downgrade(server, tmp_path):
    """Someone rewrites a device's check to say it runs an old app: the server signs no rollback it did not record."""
    with updater(server, tmp_path / "store", channel="old-apps") as u:
        assert u.update().version == 2
    claims_old_app = Middle()
    with updater(server, tmp_path / "store", claims_old_app, channel="old-apps", app_version="1.0") as u:
        assert u.update().status == "current"
        assert u.installed_version() == 2
        last = u.last_signed_answer()
        assert (last.action, last.reason) == ("stay", "no_recorded_rollback")


def test_an_unsigned_nothing_new_is_seen_as_a_freeze(server, tmp_path):
    with updater(server, tmp_path / "store") as u:
        u.update()
        signed = u.last_signed_answer()
    time.sleep(1.1)
    with updater(server, tmp_path / "store", Middle(lambda r: httpx.Response(204)
                                                    if r.url.path == "/v1/ota/check" else None)) as u:
        assert u.update().status == "current"  # believed to be nothing new…
        assert u.last_signed_answer() == signed  # …but it refreshes nothing
        assert u.answer_age_s() >= 1


def test_a_tampered_answer_is_refused(server, tmp_path):
    good = Middle()
    with updater(server, tmp_path / "a", good) as u:
        u.update()
    envelope = json.loads(good.seen[-1])
    p = json.loads(base64.b64decode(envelope["payload"]))
    p["version"] = 99
    envelope["payload"] = base64.b64encode(json.dumps(p).encode()).decode()
    with (updater(server, tmp_path / "b", Middle(on_check(json.dumps(envelope).encode()))) as u,
          pytest.raises(SignatureError, match="signature")):
        u.update()


@pytest.mark.parametrize("route", ["/v1/ota/check", "/v1/ota/keys", "/v1/devices"])
def test_an_endless_answer_stops_at_the_cap(server, tmp_path, route):
    flood = Endless()
    middle = Middle(lambda r: httpx.Response(200, stream=flood) if r.url.path == route else None)
    with updater(server, tmp_path / "store", middle) as u, pytest.raises(AnswerTooLarge):
        u.update()
    assert flood.sent <= 2 * MIB  # a check is capped at 1 MiB, a key or a registration at 64 KiB


def test_an_endless_error_message_stops_at_the_cap(server, tmp_path):
    flood = Endless()
    middle = Middle(lambda r: httpx.Response(503, stream=flood) if r.url.path == "/v1/ota/check" else None)
    with updater(server, tmp_path / "store", middle) as u, pytest.raises(AnswerTooLarge):
        u.update()
    assert flood.sent <= MIB


def test_a_gzip_bomb_stops_at_the_cap(server, tmp_path):
    bomb = gzip.compress(b"\0" * (48 * MIB))  # 48 MiB in under the 64 KiB a key's answer may take
    assert len(bomb) < 64 * 1024
    middle = Middle(lambda r: httpx.Response(200, stream=Chunks(bomb), headers={"content-encoding": "gzip"})
                    if r.url.path == "/v1/ota/keys" else None)
    with updater(server, tmp_path / "store", middle) as u, pytest.raises(AnswerTooLarge, match="inflated"):
        u.update()


def test_a_download_longer_than_signed_is_cut_off(server, tmp_path):
    inner = httpx.HTTPTransport()

    def longer(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.startswith("/v1/ota/files/"):
            return None
        real = inner.handle_request(request)
        return httpx.Response(200, content=real.read() + b"\0" * (8 * MIB))

    with inner, updater(server, tmp_path / "store", Middle(longer)) as u, \
            pytest.raises(ChecksumError, match="more than"):
        u.update()
    assert not list((tmp_path / "store" / "faces" / "downloads").glob("*.part"))  # nothing of it kept


# --- spoofed forwarding headers against the brute-force guard ---------------------------------------

GUARD = {"auth_failures_burst": 5, "auth_failures_per_s": 0.01}
BAD = {"authorization": f"Bearer tdm_{'0' * 12}_{'x' * 43}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_bundles):
    """Two servers: one trusting no proxy (the default), one behind a proxy at 127.0.0.1."""
    with target(tmp_path_factory.mktemp("no-proxy"), [tiny_bundles["v1"]], **GUARD) as plain, \
            target(tmp_path_factory.mktemp("proxy"), [tiny_bundles["v1"]], trusted_proxies="127.0.0.1",
                   **GUARD) as proxied:
        yield plain, proxied


def test_spoofed_forwarding_headers_do_not_reset_the_guard(guarded):
    plain, _ = guarded
    with plain.client() as http:
        codes = []
        for i in range(8):  # a new "address" per guess, in either header
            spoof = {"x-forwarded-for": f"10.0.{i}.{i}"} if i % 2 else {"forwarded": f"for=10.0.{i}.{i}"}
            codes.append(http.get("/v2", headers={**BAD, **spoof}).status_code)
        assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
        # Blocked: this address's valid key waits too, whatever it claims to be.
        for spoof in ({"x-forwarded-for": "1.2.3.4"}, {"forwarded": "for=1.2.3.4"}):
            r = http.get("/v2", headers={"authorization": f"Bearer {plain.keys['predict']}", **spoof})
            assert r.status_code == 429, spoof


def test_a_trusted_proxy_is_believed_from_the_right(guarded):
    _, proxied = guarded  # this test speaks as the proxy at 127.0.0.1, which appends the client's address
    with proxied.client() as http:
        codes = [http.get("/v2", headers={**BAD, "x-forwarded-for": "203.0.113.7"}).status_code for _ in range(6)]
        assert codes == [401] * 5 + [429]
        valid = {"authorization": f"Bearer {proxied.keys['predict']}"}
        # The client blocked, whatever it puts left of what the proxy appended…
        for spoof in ("203.0.113.7", "1.1.1.1, 203.0.113.7", "127.0.0.1, 203.0.113.7"):
            assert http.get("/v2", headers={**valid, "x-forwarded-for": spoof}).status_code == 429, spoof
        # …and another client behind the same proxy not.
        assert http.get("/v2", headers={**valid, "x-forwarded-for": "203.0.113.8"}).status_code == 200
