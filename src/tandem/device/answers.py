"""The device reads every answer of a server with a cap (STYLE 18): a check, a data key, a
registration, an error message, an inference result. A broken or hostile server, or someone between
it and the device, can send gigabytes, or a few kilobytes that inflate to gigabytes; the device reads
no further than the cap allows and raises AnswerTooLarge.

httpx would inflate gzip, deflate, brotli and zstd bodies by itself, with no limit: every request here
asks for ``Accept-Encoding: identity``, the body is read raw (``iter_raw``), and a gzip or deflate body
sent anyway is inflated here, never past the cap; any other encoding is refused.

With a :class:`~tandem.device.deadline.Deadline`, the body is read no later than it: a server that
trickles its answer a byte at a time beats every per-read timeout, not the deadline.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

from tandem.device.deadline import Deadline
from tandem.errors import AnswerTooLarge

IDENTITY = {"accept-encoding": "identity"}
MESSAGE_CAP = 64 * 1024  # an error answer says what went wrong in a sentence: this is plenty
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}
_DROP = {"content-encoding", "content-length", "transfer-encoding"}


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """A streamed response's bytes as sent (no decoding), chunk by chunk; whole if a transport made it of
    bytes in memory (a test's)."""
    try:
        yield response.content
        return
    except httpx.ResponseNotRead:
        pass
    yield from response.iter_raw()


def _too_large(what: str, cap: int, got: str = "") -> AnswerTooLarge:
    return AnswerTooLarge(f"{what}: the server's answer{got} is larger than the {cap:,} bytes any such answer takes; "
                          "refusing it (a broken server, or someone in between)")


def body(response: httpx.Response, cap: int, what: str, deadline: Deadline | None = None) -> bytes:
    """The (decoded) body of a streamed ``response``: at most ``cap`` bytes (an error's message at most
    MESSAGE_CAP), or AnswerTooLarge; DeadlineExceeded when ``deadline`` passes before its end."""
    if not 200 <= response.status_code < 300:
        cap = min(cap, MESSAGE_CAP)
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise _too_large(what, cap, f" of {int(declared):,} bytes")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflate = None
    if encoding not in ("", "identity"):
        if encoding not in _WBITS:
            raise AnswerTooLarge(f"{what}: the server sent its answer in encoding {encoding[:40]!r}, which this device "
                                 "does not read (it asks for identity); refusing it")
        inflate = zlib.decompressobj(_WBITS[encoding])
    out = bytearray()
    try:
        for raw in raw_chunks(response):
            piece = inflate.decompress(raw, cap + 1 - len(out)) if inflate is not None else raw
            out += piece
            if len(out) > cap or (inflate is not None and inflate.unconsumed_tail):
                raise _too_large(what, cap, " (inflated)" if inflate is not None else "")
            if deadline is not None and deadline.expired():
                raise deadline.exceeded(what)
    except zlib.error as e:
        raise AnswerTooLarge(f"{what}: the server's {encoding} answer is damaged ({e})") from e
    return bytes(out)


def read(streamed: httpx.Response, cap: int, what: str, deadline: Deadline | None = None) -> httpx.Response:
    """A streamed response read within ``cap`` and ``deadline`` (and closed): a plain response holding
    that body, its encoding undone, for ``.json()`` and ``.content`` as usual."""
    try:
        data = body(streamed, cap, what, deadline)
    finally:
        streamed.close()
    headers = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _DROP]
    return httpx.Response(streamed.status_code, headers=headers, content=data, request=streamed.request,
                          extensions=streamed.extensions)


def send(client: httpx.Client, request: httpx.Request, cap: int, what: str,
         deadline: Deadline | None = None) -> httpx.Response:
    """Send ``request`` (asking for no encoding) and read its answer within ``cap`` and ``deadline``."""
    for name, value in IDENTITY.items():
        request.headers[name] = value
    return read(client.send(request, stream=True), cap, what, deadline)
