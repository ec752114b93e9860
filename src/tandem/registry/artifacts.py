"""The artifact store: file contents addressed by their sha256.

Content addressing makes a write idempotent (the same bytes always land at the same name), lets
versions share unchanged files, and makes a stored object self-verifying. Two backends: ``LocalStore``
(a folder, below) and ``S3Store`` (S3-compatible object storage, s3.py); ``open_store`` picks one
from the settings (TANDEM_ARTIFACTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from tandem.bundle import sha256_file
from tandem.errors import BundleError, ConfigError, RegistryError, StorageFull, TandemError, is_storage_full

if TYPE_CHECKING:
    from tandem.settings import RegistrySettings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
STREAM_CHUNK = 256 * 1024  # what one read of an OTA download sends at a time
# A write in progress touches its temporary file at least once per chunk; one untouched for an hour
# belongs to a process that was killed.
STALE_INCOMING_S = 3600.0


@dataclass(frozen=True)
class StoredObject:
    """What a store says of one object, without reading it."""

    sha256: str
    size: int
    modified: float  # when it was written, seconds since the epoch (gc's grace period)
    # Changes whenever the stored bytes could have: (inode, mtime) of a file, an object's ETag. A reader
    # that hashed the object once need not hash it again while this stays the same.
    version: str


class ArtifactStore(Protocol):
    location: str  # where the objects are, for messages (a folder, s3://bucket/prefix)

    def put_file(self, path: Path, expected_sha256: str | None = None) -> str:
        """Store a copy of ``path``; return its sha256. With ``expected_sha256``, refuse other bytes."""
        ...

    def put_bytes(self, data: bytes) -> str: ...

    def read(self, sha256: str) -> bytes:
        """The object's bytes, checked against their sha256 (RegistryError when missing or damaged)."""
        ...

    def open(self, sha256: str) -> BinaryIO: ...

    def path(self, sha256: str) -> Path:
        """A local file holding the object, to read or hard-link (never to modify)."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def stat(self, sha256: str) -> StoredObject | None:
        """The object's size, age and version; None when it is not stored."""
        ...

    def verify(self, sha256: str) -> bool:
        """Whether the object is stored with its bytes unchanged (reads it all)."""
        ...

    def stream(self, sha256: str, start: int, length: int) -> AsyncIterator[bytes]:
        """``length`` bytes of the object from ``start``, in chunks, without holding it whole (OTA downloads)."""
        ...

    def objects(self) -> Iterator[StoredObject]:
        """Every stored object, in no particular order (gc)."""
        ...

    def remove(self, sha256: str) -> int | None:
        """Delete an object; the bytes it held (None if it was gone already). Only gc calls this."""
        ...

    def sweep(self, older_than_s: float = STALE_INCOMING_S, dry_run: bool = False) -> int:
        """Remove what writers killed mid-write left; how many (``dry_run``: how many would go)."""
        ...


def open_store(settings: RegistrySettings) -> ArtifactStore:
    """The store TANDEM_ARTIFACTS names: s3://bucket/prefix, a local folder, or (unset) objects/ under the home."""
    where = (settings.artifacts or "").strip()
    if not where:
        return LocalStore(settings.home / "objects")
    if where.lower().startswith("s3://"):
        from tandem.registry.s3 import S3Store  # obstore is imported only by registries that use it

        # An empty variable means unset, as for TANDEM_DATABASE_URL.
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else ""
        return S3Store(where, settings.home / "cache" / "objects", endpoint_url=settings.s3_endpoint_url or None,
                       region=settings.s3_region or None, access_key_id=settings.s3_access_key_id or None,
                       secret_access_key=secret or None)
    if "://" in where or not Path(where).expanduser().is_absolute():
        raise ConfigError(f"TANDEM_ARTIFACTS={where!r} is neither s3://BUCKET/PREFIX (S3-compatible object storage) "
                          "nor an absolute folder: give one of those, or unset it to keep objects under TANDEM_HOME")
    return LocalStore(Path(where).expanduser())


def check_digest(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise RegistryError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    return sha256


def is_digest(name: str) -> bool:
    return bool(_SHA256.match(name))


def missing(sha256: str, location: str) -> RegistryError:
    return RegistryError(f"object {sha256} is missing from the artifact store at {location}: the store was "
                         "changed by hand or lost files; push the bundle again")


def damaged(sha256: str, location: str) -> RegistryError:
    return RegistryError(f"object {sha256} in the artifact store at {location} is damaged (its bytes no longer "
                         "match their sha256): push the bundle again to store it anew")


def changed_while_stored(path: Path, digest: str, expected: str) -> BundleError:
    return BundleError(f"{path} has sha256 {digest[:12]}…, expected {expected[:12]}…: the file changed while it "
                       "was being stored; check nothing is writing to it and try again")


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened for fsync on Windows.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, and setting it while another thread
# (a server worker's) creates a file would give that file the wrong mode.
UMASK = _read_umask()


class LocalStore:
    """Objects at ``<root>/ab/cdef…`` (the first two hex digits fan out the folders).

    Every object is written to a temporary file under ``root`` (so on the same filesystem),
    fsync'd, made read-only and renamed into place: a reader sees a whole object or none.
    Objects are never modified, so bundle folders may hard-link them.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _object(self, sha256: str) -> Path:
        d = check_digest(sha256)
        return self.root / d[:2] / d[2:]

    def exists(self, sha256: str) -> bool:
        return self._object(sha256).is_file()

    def _holds(self, sha256: str) -> bool:
        """Whether the object is stored and unchanged. Hashed, not just sized: a damaged object is then
        replaced when its content is stored again (what a failed bundle verification asks the user to do)."""
        target = self._object(sha256)
        return target.is_file() and sha256_file(target) == sha256

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def path(self, sha256: str) -> Path:
        p = self._object(sha256)
        if not p.is_file():
            raise missing(sha256, self.location)
        return p

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")

    def read(self, sha256: str) -> bytes:
        data = self.path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise damaged(sha256, self.location)
        return data

    def stat(self, sha256: str) -> StoredObject | None:
        try:
            st = self._object(sha256).stat()
        except FileNotFoundError:
            return None
        return StoredObject(sha256, st.st_size, st.st_mtime, f"{st.st_ino}:{st.st_mtime_ns}")

    def verify(self, sha256: str) -> bool:
        return self._holds(sha256)

    async def stream(self, sha256: str, start: int, length: int) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(self.path(sha256).open, "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            left = length
            while left > 0:
                data = await asyncio.to_thread(f.read, min(STREAM_CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data
        finally:
            f.close()

    def put_file(self, path: Path, expected_sha256: str | None = None) -> str:
        path = Path(path)
        if expected_sha256 is not None and self._holds(expected_sha256):
            return expected_sha256  # idempotent: reading the stored copy is cheaper than writing another
        with path.open("rb") as src:
            return self.put_chunks(iter(lambda: src.read(_CHUNK), b""), expected_sha256,
                                   lambda digest: changed_while_stored(path, digest, expected_sha256 or ""))

    def put_chunks(self, chunks: Iterable[bytes], expected_sha256: str | None,
                   mismatch: Callable[[str], TandemError]) -> str:
        """Store the bytes ``chunks`` yields, hashed while they are written: what is stored is exactly what
        was hashed, even if the source changes meanwhile. Other bytes than ``expected_sha256``: nothing is
        stored and ``mismatch(their sha256)`` is raised."""
        with self._incoming() as (f, tmp):
            h = hashlib.sha256()
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            digest = h.hexdigest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise mismatch(digest)
            self._install(f, tmp, digest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self._holds(digest):
            return digest
        with self._incoming() as (f, tmp):
            f.write(data)
            self._install(f, tmp, digest)
        return digest

    def objects(self) -> Iterator[StoredObject]:
        """Every stored object, in no particular order; what is not named like an object (a temporary
        file, something put there by hand) is not listed."""
        if not self.root.is_dir():
            return
        for fan in self.root.iterdir():
            if len(fan.name) != 2 or not fan.is_dir():
                continue
            for obj in fan.iterdir():
                digest = fan.name + obj.name
                if _SHA256.match(digest) and (found := self.stat(digest)) is not None:
                    yield found

    def remove(self, sha256: str) -> int | None:
        """Delete an object; the bytes it held (None if it was gone already). Only `tandem gc` calls
        this, for objects nothing refers to (gc.py says when that is known)."""
        target = self._object(sha256)
        try:
            size = target.stat().st_size
            target.unlink()
        except FileNotFoundError:
            return None
        return size

    def sweep(self, older_than_s: float = STALE_INCOMING_S, dry_run: bool = False) -> int:
        """Remove temporary files that writers killed mid-write left behind (never visible as objects,
        but they hold disk space); a live writer's file is younger. Returns how many went (``dry_run``:
        how many would)."""
        cutoff = time.time() - older_than_s
        gone = 0
        for tmp in self.root.glob(".incoming-*.tmp") if self.root.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < cutoff:
                    if not dry_run:
                        tmp.unlink()
                    gone += 1
        return gone

    @contextlib.contextmanager
    def _incoming(self):
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.root, prefix=".incoming-", suffix=".tmp")
        except OSError as e:
            if is_storage_full(e):
                raise self._full(e) from e
            raise
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, tmp
        except OSError as e:
            # A full disk is the operator's to fix, not a crash: say so (the partial file goes below).
            if is_storage_full(e):
                raise self._full(e) from e
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _full(self, e: OSError) -> StorageFull:
        return StorageFull(f"the artifact store at {self.location} is out of space ({e.strerror}); nothing was "
                           "stored: free space there (or point TANDEM_HOME elsewhere) and try again")

    def _install(self, f: BinaryIO, tmp: Path, digest: str) -> None:
        f.flush()
        os.fsync(f.fileno())
        target = self._object(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if self._holds(digest):
            return  # another writer stored the same bytes meanwhile
        os.chmod(tmp, 0o444 & ~UMASK)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
