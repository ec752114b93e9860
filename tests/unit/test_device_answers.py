"""The device reads a server's answers with a cap (device/answers.py): a flood, a gzip bomb or an
encoding it did not ask for stop at the cap, for checks, keys, messages and inference answers."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest

from tandem.device import answers
from tandem.device.cloud_client import CloudClient
from tandem.device.ota_client import OtaClient
from tandem.errors import AnswerTooLarge

MIB = 1 << 20


class Endless(httpx.SyncByteStream):
    """An answer that never ends; counts what was read of it."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            self.sent += MIB
            yield b"x" * MIB


def streamed(status: int = 200, headers: dict | None = None, stream: httpx.SyncByteStream | None = None,
             content: bytes = b"") -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=stream or httpx.ByteStream(content))


def test_an_endless_answer_stops_at_the_cap():
    flood = Endless()
    client = httpx.Client(transport=httpx.MockTransport(lambda r: streamed(stream=flood)))
    with pytest.raises(AnswerTooLarge, match="larger than the 4,194,304 bytes"):
        answers.send(client, client.build_request("GET", "http://x/"), 4 * MIB, "a check")
    assert flood.sent <= 5 * MIB


def test_a_gzip_bomb_is_inflated_no_further_than_the_cap():
    bomb = gzip.compress(b"\0" * (256 * MIB))
    assert len(bomb) < 300_000
    client = httpx.Client(transport=httpx.MockTransport(
        lambda r: streamed(headers={"content-encoding": "gzip"}, content=bomb)))
    with pytest.raises(AnswerTooLarge, match="inflated"):
        answers.send(client, client.build_request("GET", "http://x/"), MIB, "a key")
    ok = httpx.Client(transport=httpx.MockTransport(
        lambda r: streamed(headers={"content-encoding": "gzip"}, content=gzip.compress(b'{"a": 1}'))))
    assert answers.send(ok, ok.build_request("GET", "http://x/"), MIB, "a key").json() == {"a": 1}


def test_identity_is_asked_for_and_other_encodings_refused():
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers["accept-encoding"])
        return streamed(headers={"content-encoding": "br"}, content=b"\x0b\x02\x80hello\x03")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(AnswerTooLarge, match="encoding 'br'"):
        answers.send(client, client.build_request("GET", "http://x/"), MIB, "a message")
    assert asked == ["identity"]


def test_a_declared_length_over_the_cap_is_refused_unread():
    flood = Endless()
    client = httpx.Client(transport=httpx.MockTransport(
        lambda r: streamed(headers={"content-length": str(10**12)}, stream=flood)))
    with pytest.raises(AnswerTooLarge, match="of 1,000,000,000,000 bytes"):
        answers.send(client, client.build_request("GET", "http://x/"), MIB, "a check")
    assert flood.sent == 0


@pytest.mark.parametrize("call", ["register", "check", "data_key", "report", "error"])
def test_every_ota_answer_is_capped(call):
    flood = Endless()

    def handler(request: httpx.Request) -> httpx.Response:
        return streamed(401 if call == "error" else 200, stream=flood)

    client = OtaClient("http://x", "tdm_key", httpx.Timeout(5), httpx.MockTransport(handler),
                       credential=lambda: "tdd_credential")
    with pytest.raises(AnswerTooLarge):
        {"register": client.register, "check": lambda: client.check({}), "error": lambda: client.check({}),
         "data_key": lambda: client.data_key("m", 1, {}), "report": lambda: client.report({})}[call]()
    assert flood.sent <= 2 * MIB  # a check's cap is 1 MiB; a key, a registration, a message 64 KiB


def test_a_cloud_answer_is_capped():
    flood = Endless()
    cloud = CloudClient("http://x", "m", transport=httpx.MockTransport(lambda r: streamed(stream=flood)),
                        max_answer_bytes=8 * MIB, retries=0)
    with pytest.raises(AnswerTooLarge):
        cloud.metadata()
    assert flood.sent <= 9 * MIB
