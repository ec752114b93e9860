"""Artifacts in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2, GCS's S3 API).

Selected with TANDEM_ARTIFACTS=s3://bucket/prefix. Objects sit at ``<prefix>/ab/cdef…``, named by their
sha256 as in a ``LocalStore``, so two servers on two machines share one registry: the database says
which objects a version names, the bucket holds them.

The client is obstore (Python bindings of Rust's ``object_store``, the crate under DataFusion and
Polars). Chosen over boto3/aioboto3 and s3fs for throughput and for fitting both sides of Tandem: its
transfers run in Rust with the GIL released, a big file goes up as a multipart upload whose parts are
sent concurrently (boto3 needs s3transfer's thread pool for that, s3fs an event loop of its own), and it
has a native asyncio API, so the server streams OTA bytes from the bucket without a thread per
download, while the CLI's push uses the same store synchronously. It reads the standard AWS settings
(AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, web identity, instance roles) itself, and is one wheel with no
dependencies, against botocore's 100 MB of service models.

Integrity: every request body is signed with its sha256 (SigV4), so the service refuses a part that
changed on the way. A file is hashed while it is uploaded; if its bytes are not the ones it must hold
(the file changed under the push), the multipart upload is aborted before it completes, so nothing
appears under the name. Every read that hands bytes on is checked against the name: ``read`` hashes
what it returns, ``path`` what it caches, ``verify`` the whole object (OTA downloads hash each object
once per worker, then serve ranges of it while its ETag stays the same).

An object already stored under its name is not uploaded again if it has the size and the ETag of the
bytes being stored (the MD5 that S3 computes of what it stored, per part for a multipart upload; computed
here from the local file, so no download is needed): a push of the same bundle costs a HEAD per file, and
a push still repairs an object that was damaged or overwritten, as with a local folder. (Where ETags are
not MD5s, under SSE-KMS or SSE-C, every push uploads again: correct, only slower.)

``path()`` (bundle folders are files that ONNX Runtime opens) downloads the object once into a local,
content-addressed cache under the Tandem home, checked as it is written; a cache of immutable objects
never goes stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store as _Bucket

from tandem.errors import ConfigError, RegistryError, Unavailable
from tandem.registry.artifacts import (
    STALE_INCOMING_S,
    STREAM_CHUNK,
    LocalStore,
    StoredObject,
    changed_while_stored,
    check_digest,
    damaged,
    is_digest,
    missing,
)

if TYPE_CHECKING:
    from obstore import GetResult

# Parts of a multipart upload; a file up to this size goes up in one PUT from memory. 8 MiB parts sent 8 at
# a time keep a fast link busy without holding more than 64 MiB in flight.
PART_BYTES = 8 << 20
CONCURRENCY = 8
_READ_CHUNK = 1 << 20
_BUCKET_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; ConfigError saying what is wrong otherwise."""
    rest = url.strip()[len("s3://"):] if url.strip().lower().startswith("s3://") else None
    bucket, _, prefix = (rest or "").partition("/")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if rest is None or not re.fullmatch(_BUCKET_NAME, bucket) or any(p in ("", ".", "..") for p in parts) \
            or not all(p.isprintable() and "\\" not in p for p in parts):
        raise ConfigError(f"TANDEM_ARTIFACTS={url!r} is not s3://BUCKET or s3://BUCKET/PREFIX (a bucket name of "
                          "3-63 lowercase letters, digits, '.' or '-'; a prefix of plain folder names), e.g. "
                          "s3://models/tandem")
    return bucket, prefix


def _first_line(e: BaseException) -> str:
    """What obstore says happened: the first line of its message (a multi-line debug dump follows), without
    the request's URL (the server hands these messages to clients; the operator knows the endpoint)."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"https?://\S+", "<the object>", line)[:500]


class S3Store:
    def __init__(self, url: str, cache: Path, *, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 part_bytes: int = PART_BYTES, max_retries: int = 5) -> None:
        bucket, prefix = parse_url(url)
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError("set both TANDEM_S3_ACCESS_KEY_ID and TANDEM_S3_SECRET_ACCESS_KEY, or neither (then "
                              "the standard AWS credentials are used: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                              "an instance or task role)")
        config: dict[str, str] = {}
        if endpoint_url:
            if not endpoint_url.lower().startswith(("http://", "https://")):
                raise ConfigError(f"TANDEM_S3_ENDPOINT_URL={endpoint_url!r} is not an http(s):// URL, e.g. "
                                  "http://127.0.0.1:9000 for a MinIO on this machine")
            config["endpoint"] = endpoint_url.rstrip("/")
        if region:
            config["region"] = region
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"], config["secret_access_key"] = access_key_id, secret_access_key
        self.bucket, self.prefix = bucket, prefix
        # Without the endpoint: messages name it, and the server's errors reach its clients.
        self.location = f"s3://{bucket}/{prefix}".rstrip("/")
        self.part_bytes = part_bytes
        try:
            self._s3 = _Bucket(
                bucket, prefix=prefix or None, config=config,  # type: ignore[arg-type]
                # Plain HTTP only when the endpoint asks for it (a MinIO on loopback); AWS_ALLOW_HTTP otherwise.
                client_options={"allow_http": bool(endpoint_url and endpoint_url.lower().startswith("http://")),
                                "connect_timeout": timedelta(seconds=5), "timeout": timedelta(seconds=300)},
                retry_config={"max_retries": max_retries, "retry_timeout": timedelta(seconds=60)},
            )
        except (BaseError, ValueError) as e:
            raise ConfigError(f"cannot use the artifact store {self.location}: {_first_line(e)}") from e
        self.cache = LocalStore(cache)

    @staticmethod
    def _key(sha256: str) -> str:
        d = check_digest(sha256)
        return f"{d[:2]}/{d[2:]}"

    @contextlib.contextmanager
    def _answering(self, doing: str) -> Iterator[None]:
        """The service's failures as Tandem's errors: refused credentials are a setting to fix, anything else
        (unreachable, throttled past the retries, 5xx) is an outage to wait out."""
        try:
            yield
        except (PermissionDeniedError, UnauthenticatedError) as e:
            raise ConfigError(f"the artifact store {self.location} refused to {doing} ({_first_line(e)}): check the "
                              "credentials (TANDEM_S3_ACCESS_KEY_ID, or AWS_ACCESS_KEY_ID and the like) and the "
                              "bucket's policy") from e
        except BaseError as e:
            raise Unavailable(f"the artifact store {self.location} could not {doing} ({_first_line(e)}); check it "
                              "is reachable (TANDEM_S3_ENDPOINT_URL) and try again", retry_after=5.0) from e

    # --- what is stored -------------------------------------------------------------------------

    def stat(self, sha256: str) -> StoredObject | None:
        key = self._key(sha256)
        with self._answering(f"look up object {sha256[:12]}…"):
            try:
                meta = obstore.head(self._s3, key)
            except FileNotFoundError:
                return None
        modified = meta["last_modified"]
        return StoredObject(sha256, meta["size"], modified.timestamp(), meta["e_tag"] or modified.isoformat())

    def exists(self, sha256: str) -> bool:
        return self.stat(sha256) is not None

    def size(self, sha256: str) -> int:
        found = self.stat(sha256)
        if found is None:
            raise missing(sha256, self.location)
        return found.size

    def objects(self) -> Iterator[StoredObject]:
        """Every stored object with its size and last-modified time; keys not named like an object are not
        listed (another program's files under the prefix, say)."""
        with self._answering("list its objects"):
            for batch in obstore.list(self._s3, chunk_size=1000):
                for meta in batch:
                    fan, _, rest = meta["path"].partition("/")
                    if len(fan) == 2 and "/" not in rest and is_digest(fan + rest):
                        modified = meta["last_modified"]
                        yield StoredObject(fan + rest, meta["size"], modified.timestamp(),
                                           meta["e_tag"] or modified.isoformat())

    # --- writing --------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self._holds(digest, len(data), _etag([data], self.part_bytes)):
            self._upload(digest, data)
        return digest

    def put_file(self, path: Path, expected_sha256: str | None = None) -> str:
        path = Path(path)
        with path.open("rb") as src:
            # One local read for the name and the ETag, before anything is sent; the upload hashes again.
            h = hashlib.sha256()
            etag = _etag(_hashed(iter(lambda: src.read(self.part_bytes), b""), h), self.part_bytes)
            size, digest = src.tell(), expected_sha256 or h.hexdigest()
            if h.hexdigest() != digest:
                raise changed_while_stored(path, h.hexdigest(), digest)
            if self._holds(digest, size, etag):
                return digest  # idempotent: the name holds these very bytes already
            src.seek(0)
            if size <= self.part_bytes:
                data = src.read()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise changed_while_stored(path, hashlib.sha256(data).hexdigest(), digest)
                self._upload(digest, data)
            else:
                self._upload(digest, _checked(src, path, digest, self.part_bytes))
        return digest

    def _holds(self, sha256: str, size: int, etag: str) -> bool:
        found = self.stat(sha256)
        return found is not None and found.size == size and found.version.strip('"') == etag

    def _upload(self, sha256: str, body: bytes | Iterator[bytes]) -> None:
        # A multipart upload completes only once the iterator is exhausted without raising; on any error
        # obstore aborts it, so a reader never sees part of an object.
        with self._answering(f"store object {sha256[:12]}…"):
            try:
                obstore.put(self._s3, self._key(sha256), body, chunk_size=self.part_bytes, max_concurrency=CONCURRENCY)
            except FileNotFoundError as e:  # the service answered 404 to a write: no such bucket
                raise ConfigError(f"the artifact store {self.location} has no bucket {self.bucket!r} "
                                  f"({_first_line(e)}): create it, or check TANDEM_ARTIFACTS and "
                                  "TANDEM_S3_ENDPOINT_URL") from e

    # --- reading --------------------------------------------------------------------------------

    def _get(self, sha256: str) -> GetResult:
        with self._answering(f"read object {sha256[:12]}…"):
            try:
                return obstore.get(self._s3, self._key(sha256))
            except FileNotFoundError:
                raise missing(sha256, self.location) from None

    def read(self, sha256: str) -> bytes:
        with self._answering(f"read object {sha256[:12]}…"):
            data = bytes(self._get(sha256).bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise damaged(sha256, self.location)
        return data

    def open(self, sha256: str) -> BinaryIO:
        """The object's bytes (checked) as a file; ``stream`` reads big ones in ranges without holding them."""
        return io.BytesIO(self.read(sha256))

    def verify(self, sha256: str) -> bool:
        h = hashlib.sha256()
        try:
            with self._answering(f"read object {sha256[:12]}…"):
                for chunk in self._get(sha256).stream(min_chunk_size=_READ_CHUNK):
                    h.update(chunk)
        except RegistryError:  # missing
            return False
        return h.hexdigest() == sha256

    def path(self, sha256: str) -> Path:
        if self.cache.exists(sha256):
            return self.cache.path(sha256)
        result = self._get(sha256)
        with self._answering(f"read object {sha256[:12]}…"):
            self.cache.put_chunks((bytes(c) for c in result.stream(min_chunk_size=_READ_CHUNK)), sha256,
                                  lambda _: damaged(sha256, self.location))
        return self.cache.path(sha256)

    async def stream(self, sha256: str, start: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        key = self._key(sha256)
        with self._answering(f"read object {sha256[:12]}…"):
            try:
                result = await obstore.get_async(self._s3, key, options={"range": (start, start + length)})
            except FileNotFoundError:
                raise missing(sha256, self.location) from None
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                yield bytes(chunk)

    def presign(self, sha256: str, lifetime: timedelta) -> str:
        """A URL that GETs the object, no credentials needed, until ``lifetime`` has passed (SigV4 query
        signing, computed here without a request). It carries the access key's id and the signature, never
        the secret; under temporary credentials (a role), also their session token, which is of no use
        without the secret. Anyone holding the URL may read the object until it expires: OTA hands out
        only manifests and encrypted objects this way (server/ota/mirrors.py)."""
        with self._answering(f"sign a download URL for object {sha256[:12]}…"):
            return obstore.sign(self._s3, "GET", self._key(sha256), lifetime)

    # --- removing -------------------------------------------------------------------------------

    def remove(self, sha256: str) -> int | None:
        """Delete the object (and this machine's cached copy); the bytes it held, None if it was gone."""
        found = self.stat(sha256)
        self.cache.remove(sha256)
        if found is None:
            return None
        with self._answering(f"delete object {sha256[:12]}…"):
            obstore.delete(self._s3, self._key(sha256))
        return found.size

    def sweep(self, older_than_s: float = STALE_INCOMING_S, dry_run: bool = False) -> int:
        """The local cache's temporary files of killed downloads. Multipart uploads a killed push left
        incomplete are invisible and are the bucket's to expire (docs/registry.md: a lifecycle rule)."""
        return self.cache.sweep(older_than_s, dry_run)


def _checked(src: BinaryIO, path: Path, expected: str, chunk: int) -> Iterator[bytes]:
    """``src``'s chunks, hashed as they go; raises (which aborts the upload) if they were not ``expected``."""
    h = hashlib.sha256()
    yield from _hashed(iter(lambda: src.read(chunk), b""), h)
    if h.hexdigest() != expected:
        raise changed_while_stored(path, h.hexdigest(), expected)


def _hashed(chunks: Iterable[bytes], h: hashlib._Hash) -> Iterator[bytes]:
    for chunk in chunks:
        h.update(chunk)
        yield chunk


def _etag(chunks: Iterable[bytes], part_bytes: int) -> str:
    """The ETag S3 gives the bytes ``chunks`` yields when stored as ``_upload`` stores them: the MD5 of the
    bytes in one PUT up to ``part_bytes``; past that, a multipart upload of ``part_bytes`` parts, whose ETag
    is the MD5 of the parts' MD5s and their count."""
    parts: list[bytes] = []
    whole, part, filled = hashlib.md5(usedforsecurity=False), hashlib.md5(usedforsecurity=False), 0
    for chunk in chunks:
        view = memoryview(chunk)
        whole.update(view)
        while view:
            take = view[: part_bytes - filled]
            part.update(take)
            filled += len(take)
            view = view[len(take):]
            if filled == part_bytes:
                parts.append(part.digest())
                part, filled = hashlib.md5(usedforsecurity=False), 0
    if filled:
        parts.append(part.digest())
    if len(parts) <= 1:
        return whole.hexdigest()
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"
