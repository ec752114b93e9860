"""The objects devices download: each model version's files encrypted with its data key, and
encrypted delta patches from older versions' files.

AES-GCM draws a random nonce, so encrypting the same file twice gives two different blobs; each
object is therefore made once, stored content-addressed, and recorded (table ``ota_objects``), and
every payload names the recorded one. Objects are written to the store before their row: a crash in
between leaves an unreferenced object, never a row without its bytes.

Associated data (what a device passes to AES-GCM, see docs/ota.md): a file blob is bound to the
plaintext file's sha256 (64 lowercase hex characters), a patch blob to ``"<from_sha256>:<to_sha256>"``,
the plaintext hashes of the file it patches and of the file it rebuilds.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tandem.bundle import MANIFEST, Manifest
from tandem.bundle.delivery import app_files, delta_kind, split_heads
from tandem.errors import NotFound, RegistryError, TandemError
from tandem.registry import tx
from tandem.registry.ota import variants
from tandem.registry.ota.keys import OtaKeys
from tandem.registry.ota.records import OtaObjectInfo
from tandem.registry.records import VersionInfo
from tandem.registry.schema import Model, OtaObject, utcnow
from tandem.security import encryption

if TYPE_CHECKING:
    from tandem.registry.registry import Registry

log = logging.getLogger(__name__)

FILE = "file"
DELTA = "delta"


def delta_aad(from_sha256: str, to_sha256: str) -> bytes:
    return f"{from_sha256}:{to_sha256}".encode()


def delivered_files(manifest: Manifest, offered: Iterable[str] | None = None) -> list[str]:
    """Every file a device may be sent (besides the manifest): each variant's model (``offered``: only
    those a release restricts itself to, variants.allowed), the app files and the split heads."""
    models = variants.allowed(variants.available(manifest), offered or ()).values()
    return sorted({*models, *app_files(manifest), *split_heads(manifest)})


def source_path(target: Manifest, source: Manifest, path: str) -> str | None:
    """The older version's counterpart of ``path``: the model file of the same variant (a delta is made
    between versions of one variant only), else the file of the same name."""
    mine, theirs = variants.available(target), variants.available(source)
    for key, rel in mine.items():
        if rel == path:
            return theirs.get(key)
    return path if path in source.files else None


@functools.lru_cache(maxsize=1)
def _delta_library():
    try:
        from tandem import delta

        return delta
    except ImportError as e:  # the delta library or its zstandard dependency is missing: full files only
        log.warning("no delta updates: the delta library cannot be imported (%s)", e)
        return None


class OtaObjects:
    def __init__(self, reg: Registry, keys: OtaKeys) -> None:
        self.reg = reg
        self.keys = keys
        self._manifests: dict[str, Manifest] = {}

    def manifest(self, sha256: str) -> Manifest:
        """A stored manifest, by its sha256 (immutable, so kept once read)."""
        m = self._manifests.get(sha256)
        if m is None:
            data = self.read(sha256, MANIFEST)
            try:
                m = Manifest.model_validate_json(data)
            except ValueError as e:
                raise RegistryError(f"stored manifest {sha256[:12]}… is not a valid manifest ({e}); push the bundle again") from e
            if len(self._manifests) > 4096:
                self._manifests.clear()
            self._manifests[sha256] = m
        return m

    def read(self, sha256: str, what: str) -> bytes:
        """A store object's bytes, checked against its address (by the store, which says which one is damaged
        or missing; ``what`` says what it holds)."""
        try:
            return self.reg.store.read(sha256)
        except RegistryError as e:
            raise RegistryError(f"the stored copy of {what}: {e}") from e

    # --- making objects -----------------------------------------------------------------------

    def prepare(self, name: str, version: int, from_versions: Iterable[int] = (),
                offered: Iterable[str] | None = None) -> list[OtaObjectInfo]:
        """Everything a release of ``version`` serves: every file it may deliver (``offered``: of the
        variants a release restricts itself to), encrypted, and delta patches from each of ``from_versions``
        (older versions devices are likely to hold)."""
        info = self.reg.get(name, version)
        manifest = self.manifest(info.manifest_sha256)
        files = delivered_files(manifest, offered)
        made = [self.file_object(info, rel) for rel in files]
        for older in sorted({v for v in from_versions if v < version}):
            try:
                source = self.reg.get(name, older)
            except NotFound:
                continue
            for rel in files:
                delta = self.delta_object(info, rel, source)
                if delta is not None:
                    made.append(delta)
        return made

    def file_object(self, info: VersionInfo, path: str) -> OtaObjectInfo:
        """The version's file ``path`` encrypted with the version's data key."""
        plain = info.files.get(path)
        if plain is None:
            raise NotFound(f"{info.name} v{info.version} has no file {path!r}")
        found = self.find(info.name, info.version, FILE, path, "")
        if found is not None and self._intact(found.sha256):
            return found
        _, key = self.keys.data_key(info.name, info.version)
        blob = encryption.encrypt(key, self.read(plain, f"{info.name} v{info.version} {path}"), plain.encode())
        return self._record(info, FILE, path, "", plain, blob, found)

    def delta_object(self, info: VersionInfo, path: str, source: VersionInfo) -> OtaObjectInfo | None:
        """An encrypted patch that rebuilds ``path`` of ``info`` from its counterpart in ``source``;
        None when there is nothing to patch (same file, no counterpart) or no patch can be made."""
        to_sha = info.files.get(path)
        src_path = source_path(self.manifest(info.manifest_sha256), self.manifest(source.manifest_sha256), path)
        from_sha = source.files.get(src_path) if src_path is not None else None
        if to_sha is None or from_sha is None or from_sha == to_sha:
            return None
        found = self.find(info.name, info.version, DELTA, path, from_sha)
        if found is not None and self._intact(found.sha256):
            return found
        delta = _delta_library()
        if delta is None:
            return None
        old = self.read(from_sha, f"{source.name} v{source.version} {src_path}")
        new = self.read(to_sha, f"{info.name} v{info.version} {path}")
        try:
            patch = delta.diff(old, new, delta_kind(path))
            # Checked here once rather than on a device: a patch that does not rebuild the file is never offered.
            if hashlib.sha256(delta.apply(old, patch)).hexdigest() != to_sha:
                raise RegistryError("the rebuilt file has another sha256")
        except (TandemError, ValueError) as e:
            log.warning("no delta for %s v%d %s from v%d: %s", info.name, info.version, path, source.version, e)
            return None
        _, key = self.keys.data_key(info.name, info.version)
        blob = encryption.encrypt(key, patch, delta_aad(from_sha, to_sha))
        return self._record(info, DELTA, path, from_sha, to_sha, blob, found)

    def _intact(self, sha256: str) -> bool:
        """Whether the recorded object is stored with its bytes unchanged (else it is made again)."""
        return self.reg.store.verify(sha256)

    # --- records ------------------------------------------------------------------------------

    def find(self, name: str, version: int, kind: str, path: str, from_sha256: str) -> OtaObjectInfo | None:
        with self.reg.db.read() as s:
            row = s.scalar(select(OtaObject).join(Model, Model.id == OtaObject.model_id).where(
                Model.name == name, OtaObject.version == version, OtaObject.kind == kind, OtaObject.path == path,
                OtaObject.from_sha256 == from_sha256))
            return object_info(name, row) if row is not None else None

    def _record(self, info: VersionInfo, kind: str, path: str, from_sha: str, plain: str, blob: bytes,
                replaces: OtaObjectInfo | None) -> OtaObjectInfo:
        """Store ``blob`` and record it as the object (made once: see the module's docstring)."""
        sha, size = self.reg.store.put_bytes(blob), len(blob)
        try:
            with self.reg.db.write(retryable=True) as s:
                # `tandem gc` deletes only under this lock, what no committed row names (registry/gc.py):
                # stored again here if it took the blob meanwhile, the object exists when its row commits.
                tx.lock(s)
                if not self.reg.store.exists(sha):
                    self.reg.store.put_bytes(blob)
                model_id = s.scalar(select(Model.id).where(Model.name == info.name))
                if replaces is not None:
                    # The recorded object went missing from the store or was damaged: record the new one,
                    # and move the generation on, since payloads that servers cached name the old one.
                    row = s.scalar(select(OtaObject).where(
                        OtaObject.model_id == model_id, OtaObject.version == info.version, OtaObject.kind == kind,
                        OtaObject.path == path, OtaObject.from_sha256 == from_sha))
                    if row is not None:
                        row.sha256, row.size, row.created = sha, size, utcnow()
                        tx.bump(s)
                        return object_info(info.name, row)
                row = OtaObject(model_id=model_id, version=info.version, kind=kind, path=path, from_sha256=from_sha,
                                plain_sha256=plain, sha256=sha, size=size, created=utcnow())
                s.add(row)
                s.flush()
                return object_info(info.name, row)
        except IntegrityError:
            # Another process recorded its own object first; everyone serves that one (ours stays
            # unreferenced in the store).
            found = self.find(info.name, info.version, kind, path, from_sha)
            if found is None:
                raise RegistryError(f"could not record the {kind} object of {info.name} v{info.version} {path}; "
                                    "try again") from None
            return found


def object_info(name: str, row: OtaObject) -> OtaObjectInfo:
    return OtaObjectInfo(name=name, version=row.version, kind=row.kind, path=row.path, from_sha256=row.from_sha256,
                         plain_sha256=row.plain_sha256, sha256=row.sha256, size=row.size)
