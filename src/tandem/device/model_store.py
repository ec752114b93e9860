"""The device's local model store: installed versions, the pointer to the current one, and the
crash-safe install that moves the pointer.

Layout under the store folder::

    device.json                      this device's registration: server-assigned id, wrapped credential
                                     (tandem.device.identity)
    keys.json                        wrapped data keys (tandem.device.keystore)
    trust.json                       signing keys learned through rotations, and retired (tandem.device.trust)
    <model>/
      current.json                   {"version", "previous", "sequence", "updated_at"}: THE pointer
      state.json                     {"last_sequence"}: survives delete(), so a replay stays refused
      answer.json                    the last signed check answer verified: its times, action, reason
      versions/<v>/                  one complete version:
        version.json                 what it holds (plaintext sha256/size of each file, how it is stored)
        manifest.json                the bundle manifest, as the server signed it
        model.onnx.tde …             model files as stored: TDE1 blobs (AES-256-GCM under the version's key)
      downloads/<sha256>.part        downloads in progress, resumed with Range

Crash safety. An install (``install``) goes: write every file into a private staging folder
beside ``versions/`` (steps ``staging``, ``staged``), rename it to ``versions/<v>`` (``renamed``),
store the data key (``keyed``), replace ``current.json`` with os.replace (``pointed``), then remove
versions that are neither current nor previous (``cleanup``). A reader only follows
``current.json``, which names a folder that was complete before the pointer was written, so a
process killed at any instant leaves the old model (before the pointer moved) or the new one
(after). ``recover`` removes what a killed install left: staging folders and unreferenced versions.
Files are fsynced before their rename and folders after, so a power cut behaves the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tandem import atomic
from tandem.bundle import NAME_RE
from tandem.device import faults
from tandem.device.keystore import KeyStore
from tandem.errors import ChecksumError, ConfigError, NotFound

CURRENT = "current.json"
STATE = "state.json"
ANSWER = "answer.json"
RECORD = "version.json"
# A stored file name: bundle-relative, plain segments only (it becomes a path on the device).
_FILE_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}$")


_LEAVING = object()  # _point's default: the version being left becomes the previous one


def safe_file_name(name: str) -> bool:
    return bool(_FILE_RE.fullmatch(name)) and name not in (RECORD,)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    sha256: str  # of the plaintext
    size: int
    stored: str  # the file's name inside the version folder
    encrypted: bool
    stored_sha256: str
    stored_size: int


@dataclass(frozen=True)
class VersionRecord:
    """version.json: what one installed version holds and where it came from."""

    model: str
    version: int
    sequence: int
    channel: str
    precision: str
    model_file: str  # bundle-relative name of the model file this device runs
    manifest_sha256: str
    files: dict[str, StoredFile]
    installed_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    variant: str = ""  # the model's variant (onnx-fp32, litert-int8, …); "": installed before variants, ONNX

    @property
    def runtime(self) -> str:
        return self.variant.partition("-")[0] if self.variant else "onnx"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VersionRecord:
        raw = json.loads(text)
        files = {k: StoredFile(**v) for k, v in raw.pop("files").items()}
        return cls(files=files, **raw)


@dataclass(frozen=True)
class Pointer:
    version: int
    previous: int | None
    sequence: int
    updated_at: str


class ModelStore:
    """One store folder for all models of an app. Operations that change a model's folder hold
    an exclusive lock on ``<model>/.lock``, so an app and its background updater may share it."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the model store at {self.root} ({e}); pass a writable store_dir") from e

    # --- paths ---------------------------------------------------------------------------------
    def model_dir(self, model: str) -> Path:
        if not NAME_RE.fullmatch(model):
            raise ConfigError(f"{model!r} is not a model name (letters, digits, '.', '_', '-'; 64 at most)")
        return self.root / model

    def version_dir(self, model: str, version: int) -> Path:
        return self.model_dir(model) / "versions" / str(int(version))

    def part_path(self, model: str, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ChecksumError(f"{sha256!r} is not a sha256 hex digest")
        return self.model_dir(model) / "downloads" / f"{sha256}.part"

    def lock(self, model: str) -> contextlib.AbstractContextManager[None]:
        return atomic.locked(self.model_dir(model) / ".lock")

    # --- reading -------------------------------------------------------------------------------
    def current(self, model: str) -> Pointer | None:
        path = self.model_dir(model) / CURRENT
        try:
            raw = json.loads(path.read_text("utf-8"))
            return Pointer(int(raw["version"]), None if raw.get("previous") is None else int(raw["previous"]),
                           int(raw.get("sequence", 0)), str(raw.get("updated_at", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            # Never happens through os.replace; a hand-edited or disk-damaged pointer says so.
            raise ChecksumError(f"{path} is unreadable ({e}); delete the model with updater.delete('all') "
                                "and download it again") from e

    def record(self, model: str, version: int) -> VersionRecord:
        path = self.version_dir(model, version) / RECORD
        try:
            return VersionRecord.from_json(path.read_text("utf-8"))
        except FileNotFoundError as e:
            raise NotFound(f"version {version} of {model} is not installed in {self.root}") from e
        except (ValueError, KeyError, TypeError) as e:
            raise ChecksumError(f"{path} is damaged ({e}); delete version {version} and download it again") from e

    def read(self, model: str, version: int, name: str) -> bytes:
        """A stored file's bytes, checked against the sha256 recorded when it was installed."""
        rec = self.record(model, version)
        entry = rec.files.get(name)
        if entry is None:
            raise NotFound(f"version {version} of {model} has no file {name!r} (it has {', '.join(rec.files)})")
        path = self.version_dir(model, version) / entry.stored
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise ChecksumError(f"{path} is missing: the storage was damaged or the file was removed; "
                                "download the model again") from e
        if len(data) != entry.stored_size or sha256_hex(data) != entry.stored_sha256:
            raise ChecksumError(f"{path} does not match what was installed (size or sha256 differs): the "
                                "storage was damaged or the file changed; download the model again")
        return data

    def damaged(self, model: str, version: int) -> list[str]:
        """The files of an installed version that no longer match what was installed (flipped bits,
        a truncated or missing file; its record itself when that is unreadable). Empty: intact."""
        try:
            rec = self.record(model, version)
        except ChecksumError:
            return [RECORD]
        bad = []
        for name in rec.files:
            try:
                self.read(model, version, name)
            except ChecksumError:
                bad.append(name)
        return bad

    def versions(self, model: str) -> list[int]:
        d = self.model_dir(model) / "versions"
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / RECORD).is_file())

    def last_sequence(self, model: str) -> int:
        seqs = [0]
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
            seqs.append(int(json.loads((self.model_dir(model) / STATE).read_text("utf-8"))["last_sequence"]))
        pointer = self.current(model)
        if pointer is not None:
            seqs.append(pointer.sequence)
        return max(seqs)

    def last_answer(self, model: str) -> dict[str, Any] | None:
        """What :meth:`record_answer` kept of the last signed check answer, or None."""
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            found = json.loads((self.model_dir(model) / ANSWER).read_text("utf-8"))
            return found if isinstance(found, dict) else None
        return None

    def record_answer(self, model: str, answer: dict[str, Any]) -> None:
        atomic.write_text(self.model_dir(model) / ANSWER, json.dumps(answer) + "\n")

    def raise_sequence(self, model: str, sequence: int) -> None:
        """Raise the replay floor to ``sequence``: every verified answer counts (docs/ota.md §1), not only
        the ones that installed or switched a version — after a signed "stay" or a deferred install, an
        older answer that has not expired yet must still be refused."""
        with self.lock(model):
            if sequence > self.last_sequence_state(model):
                atomic.write_text(self.model_dir(model) / STATE, json.dumps({"last_sequence": sequence}) + "\n")

    # --- changing ------------------------------------------------------------------------------
    def install(self, record: VersionRecord, blobs: dict[str, bytes], keystore: KeyStore | None = None,
                data_key: bytes | None = None) -> Pointer:
        """Install ``record``'s files (``blobs``: stored name → bytes) and make it current."""
        model, version = record.model, record.version
        for name, entry in record.files.items():
            if not safe_file_name(name) or not safe_file_name(entry.stored):
                raise ChecksumError(f"refusing the file name {name!r}: not a plain relative name")
            blob = blobs[entry.stored]
            if len(blob) != entry.stored_size or sha256_hex(blob) != entry.stored_sha256:
                raise ChecksumError(f"{name}: the bytes to install do not match their record")
        with self.lock(model):
            self._recover_locked(model)
            target = self.version_dir(model, version)
            if not self._intact(model, version, record):
                if target.exists():
                    shutil.rmtree(target)  # unreferenced leftover (recover kept only current/previous) or damaged
                self._write_version(target, record, blobs)
            faults.reached("renamed")
            if keystore is not None and data_key is not None:
                keystore.put(model, version, data_key)
            faults.reached("keyed")
            pointer = self._point(model, version, record.sequence)
            faults.reached("pointed")
            self._cleanup_locked(model, keystore)
            for entry in record.files.values():
                with contextlib.suppress(FileNotFoundError):
                    self.part_path(model, entry.stored_sha256).unlink()
            return pointer

    def switch(self, model: str, version: int, sequence: int | None = None) -> Pointer:
        """Point ``current.json`` at an installed version (a rollback to the kept previous one)."""
        with self.lock(model):
            self.record(model, version)  # NotFound unless installed
            return self._point(model, version, sequence)

    def delete(self, model: str, version: int | None = None, keystore: KeyStore | None = None) -> None:
        """Remove one version, or (``None``) every version of ``model``. Deleting the current
        version falls back to the previous one, if any, before the files go."""
        with self.lock(model):
            pointer = self.current(model)
            mdir = self.model_dir(model)
            if version is None or (pointer is not None and pointer.version == version and pointer.previous is None):
                with contextlib.suppress(FileNotFoundError):
                    (mdir / CURRENT).unlink()
                atomic.fsync(mdir)
                doomed = self.versions(model) if version is None else [version]
            else:
                if pointer is not None and pointer.version == version and pointer.previous is not None:
                    self._point(model, pointer.previous, pointer.sequence, previous=None)
                elif pointer is not None and pointer.previous == version:
                    self._point(model, pointer.version, pointer.sequence, previous=None)
                doomed = [version]
            for v in doomed:
                if not self.version_dir(model, v).exists():
                    raise NotFound(f"version {v} of {model} is not installed; installed: {self.versions(model)}")
                self._remove_version(model, v)
            if keystore is not None:
                keystore.forget(model, keep=self._referenced(model))
            if version is None:
                shutil.rmtree(mdir / "downloads", ignore_errors=True)

    def recover(self, model: str) -> None:
        with self.lock(model):
            self._recover_locked(model)

    # --- internals (call with the lock held) ----------------------------------------------------
    def _referenced(self, model: str) -> set[int]:
        pointer = self.current(model)
        if pointer is None:
            return set()
        return {pointer.version} | ({pointer.previous} if pointer.previous is not None else set())

    def _intact(self, model: str, version: int, record: VersionRecord) -> bool:
        """Is this version already installed with exactly these plaintexts (a repeat, a rollback)?"""
        try:
            have = self.record(model, version)
            for name, entry in have.files.items():
                self.read(model, version, name)
                want = record.files.get(name)
                if want is None or (want.sha256, want.size) != (entry.sha256, entry.size):
                    return False
            return set(have.files) == set(record.files)
        except (NotFound, ChecksumError, OSError):
            return False

    def _write_version(self, target: Path, record: VersionRecord, blobs: dict[str, bytes]) -> None:
        with atomic.staged_dir(target) as stage:
            for i, entry in enumerate(record.files.values()):
                path = stage / entry.stored
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as f:
                    f.write(blobs[entry.stored])
                    f.flush()
                    os.fsync(f.fileno())
                if i == 0:
                    faults.reached("staging")
            atomic.write_text(stage / RECORD, record.to_json())
            atomic.fsync(stage)
            faults.reached("staged")
        atomic.fsync(target.parent)

    def _point(self, model: str, version: int, sequence: int | None, previous: int | object | None = _LEAVING) -> Pointer:
        old = self.current(model)
        if previous is _LEAVING:  # the version we leave becomes the one to roll back to
            previous = old.version if old is not None and old.version != version else (old.previous if old else None)
        seq = max(sequence or 0, old.sequence if old else 0)
        pointer = Pointer(version, previous if isinstance(previous, int) else None, seq, datetime.now(UTC).isoformat())
        mdir = self.model_dir(model)
        atomic.write_text(mdir / CURRENT, json.dumps(asdict(pointer)) + "\n")
        atomic.fsync(mdir)
        if seq > self.last_sequence_state(model):
            atomic.write_text(mdir / STATE, json.dumps({"last_sequence": seq}) + "\n")
        return pointer

    def last_sequence_state(self, model: str) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
            return int(json.loads((self.model_dir(model) / STATE).read_text("utf-8"))["last_sequence"])
        return 0

    def _remove_version(self, model: str, version: int) -> None:
        # Rename first: a half-deleted folder never sits under a version number.
        src = self.version_dir(model, version)
        doomed = src.with_name(f".{version}.{secrets.token_hex(4)}.deleting")
        os.replace(src, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _cleanup_locked(self, model: str, keystore: KeyStore | None) -> None:
        keep = self._referenced(model)
        first = True
        for v in self.versions(model):
            if v not in keep:
                self._remove_version(model, v)
                if first:
                    faults.reached("cleanup")
                    first = False
        if keystore is not None:
            keystore.forget(model, keep=keep)

    def _recover_locked(self, model: str) -> None:
        vdir = self.model_dir(model) / "versions"
        if not vdir.is_dir():
            return
        for p in vdir.iterdir():
            if p.name.startswith("."):  # staging, .old and .deleting folders of a killed process
                shutil.rmtree(p, ignore_errors=True)
        keep = self._referenced(model)
        for v in self.versions(model):
            if v not in keep:
                self._remove_version(model, v)

