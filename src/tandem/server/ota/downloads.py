"""Sending content-addressed store objects: strong ETags, If-None-Match, single byte ranges (RFC 9110).

Objects never change under their name, so the ETag is their sha256 and caches may keep them for a
year. A device resumes a cut download with ``Range: bytes=N-``. Objects are streamed in chunks from
the artifact store (a file read in a thread, or ranged GETs on an S3 bucket); none is read whole into
memory. Before an object is first sent by this worker its bytes are hashed once, so a damaged store
object is refused instead of being sent under a sha256 it no longer has.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tandem.errors import RegistryError
from tandem.registry.artifacts import ArtifactStore
from tandem.server.responses import json_response

CACHE_CONTROL = "private, max-age=31536000, immutable"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_MAX_DIGITS = 18  # no object comes near 10**18 bytes; longer numbers are not a range we can satisfy


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The inclusive (first, last) byte of a single-range header; None to ignore the header (absent,
    malformed, several ranges: a full 200 answer is always allowed); "unsatisfiable" for 416."""
    m = _RANGE.fullmatch(header) if header else None
    if m is None or not (m.group(1) or m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    # Numbers past 18 digits are beyond any object (and int() refuses strings of over 4300 digits).
    huge = 10**_MAX_DIGITS
    if not first:  # a suffix: the last N bytes
        n = int(last) if len(last) <= _MAX_DIGITS else huge
        return "unsatisfiable" if n == 0 or size == 0 else (max(0, size - n), size - 1)
    start = int(first) if len(first) <= _MAX_DIGITS else huge
    end = (int(last) if len(last) <= _MAX_DIGITS else huge) if last else size - 1
    if last and end < start:
        return None  # an invalid range-spec: ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def etag_matches(header: str, sha256: str) -> bool:
    """If-None-Match uses the weak comparison: W/"x" matches "x"; * matches anything."""
    for raw in header.split(","):
        tag = raw.strip()
        if tag == "*" or tag.removeprefix("W/") == f'"{sha256}"':
            return True
    return False


class Verified:
    """Which store objects this worker has hashed, keyed by what a change would alter (a file's inode and
    mtime, an object's ETag; and the size)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int]] = {}

    async def check(self, store: ArtifactStore, sha256: str) -> int:
        """The object's size, once it is known to hold its bytes."""
        st = await asyncio.to_thread(store.stat, sha256)
        if st is None:
            raise RegistryError(f"object {sha256[:12]}… is missing from the artifact store; make it again with "
                                "`tandem release` for its version (or push the bundle again)")
        sig = (st.version, st.size)
        if self._seen.get(sha256) != sig:
            if not await asyncio.to_thread(store.verify, sha256):
                raise RegistryError(f"object {sha256[:12]}… in the artifact store is damaged (its bytes no longer "
                                    "match its sha256), so it is not sent; make it again with `tandem release` for "
                                    "its version (or push the bundle again)")
            if len(self._seen) > 100_000:
                self._seen.clear()
            self._seen[sha256] = sig
        return st.size


async def _chunks(store: ArtifactStore, sha256: str, start: int, length: int,
                  sent: Callable[[int], None]) -> AsyncIterator[bytes]:
    async for data in store.stream(sha256, start, length):
        sent(len(data))
        yield data


async def send_object(request: Request, store: ArtifactStore, sha256: str, verified: Verified,
                      sent: Callable[[int], None]) -> Response:
    """200, 206, 304 or 416 for the store object ``sha256``."""
    etag = f'"{sha256}"'
    headers = {"etag": etag, "accept-ranges": "bytes", "cache-control": CACHE_CONTROL}
    inm = request.headers.get("if-none-match")
    if inm is not None and etag_matches(inm, sha256):
        return Response(status_code=304, headers=headers)
    size = await verified.check(store, sha256)
    if_range = request.headers.get("if-range")
    # If-Range: resume only while the object is the one the client has the first part of.
    span = parse_range(request.headers.get("range"), size) if if_range in (None, etag) else None
    if span == "unsatisfiable":
        return json_response({"error": f"the range is outside the object's {size} bytes; ask for bytes=N- with "
                                       f"N below {size}"}, 416, {**headers, "content-range": f"bytes */{size}"})
    status, start, length = 200, 0, size
    if isinstance(span, tuple):
        status, start, length = 206, span[0], span[1] - span[0] + 1
        headers["content-range"] = f"bytes {span[0]}-{span[1]}/{size}"
    headers["content-length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(_chunks(store, sha256, start, length, sent), status_code=status, headers=headers,
                             media_type="application/octet-stream")
