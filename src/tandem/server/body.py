"""Reading request bodies within the size limit (413), gzip/deflate bodies included."""

from __future__ import annotations

import zlib

from starlette.requests import Request

from tandem.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType, quoted

# zlib's wbits: 16 + MAX_WBITS reads a gzip stream, MAX_WBITS a zlib ("deflate" in HTTP) one.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def too_large(limit: int, got: str = "") -> PayloadTooLarge:
    return PayloadTooLarge(f"request body{got} exceeds the server's limit of {limit:,} bytes "
                           "(TANDEM_MAX_BODY_BYTES); send fewer rows per request")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large(limit, f" of {int(declared):,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _WBITS:
        raise UnsupportedMediaType(f"Content-Encoding {quoted(encoding, 40)} is not supported; send gzip, deflate or identity")
    return _decompress(body, encoding, limit)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    d = zlib.decompressobj(_WBITS[encoding])
    try:
        # One byte over the limit is enough to know it is too large, without inflating a zip bomb.
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidRequest(f"the body is not valid {encoding} data ({e})") from e
    if len(out) > limit:
        raise too_large(limit, " (decompressed)")
    if not d.eof:
        raise InvalidRequest(f"the {encoding} body is truncated")
    return out
