"""Bundle folders built from the artifact store: ``<home>/bundles/<name>/<version>/``, the files hard
links of store objects (of their local cached copies with an S3 store; copies where links cannot be
made), verified once when built, then swapped into place whole so that a reader never sees half a folder."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from tandem.bundle import MANIFEST, Bundle, sha256_file
from tandem.errors import BundleError, RegistryError, StorageFull, is_storage_full
from tandem.registry.artifacts import UMASK, ArtifactStore
from tandem.registry.records import VersionInfo


class BundleFolders:
    def __init__(self, store: ArtifactStore, home: Path) -> None:
        self.store = store
        self.root = Path(home) / "bundles"

    def materialise(self, info: VersionInfo) -> Path:
        """A verified bundle folder of this version, built from the store on first use."""
        target = self.root / info.name / str(info.version)
        if intact(target, info):
            return target
        try:
            return self._build(info, target)
        except OSError as e:
            if not is_storage_full(e):
                raise
            # A clear 503 on the server (and exit code on the CLI) rather than an internal error.
            raise StorageFull(f"no space left under {target.parent} to build {info.name} v{info.version} "
                              f"({e.strerror}); free space there and try again") from e

    def built(self) -> list[tuple[str, int, Path]]:
        """Every built folder as (model name, version, path); staging and half-removed ones (hidden names)
        are left to whoever made them."""
        out: list[tuple[str, int, Path]] = []
        if not self.root.is_dir():
            return out
        for model in sorted(self.root.iterdir()):
            if model.name.startswith(".") or not model.is_dir():
                continue
            for folder in sorted(model.iterdir()):
                if folder.is_dir() and folder.name.isascii() and folder.name.isdigit():
                    out.append((model.name, int(folder.name), folder))
        return out

    def remove(self, name: str, version: int) -> bool:
        """Remove a version's folder if built (its version was deleted); whether there was one. Renamed
        out of the way first, so a reader never sees half a folder under the version's name. (Its files
        are hard links of store objects: the space comes back when `tandem gc` removes those.)"""
        target = self.root / name / str(version)
        if not target.is_dir():
            return False
        doomed = target.with_name(f".{target.name}.removed-{secrets.token_hex(4)}")
        try:
            os.rename(target, doomed)
        except FileNotFoundError:
            return False  # another process removed it first
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _build(self, info: VersionInfo, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{info.version}.", suffix=".staging"))
        try:
            for rel, sha in {**info.files, MANIFEST: info.manifest_sha256}.items():
                parts = PurePosixPath(rel).parts
                if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
                    raise RegistryError(f"{info.name} v{info.version} lists a file outside its bundle: {rel!r}")
                dst = stage.joinpath(*parts)
                dst.parent.mkdir(parents=True, exist_ok=True)
                src = self.store.path(sha)
                try:
                    # Store objects are read-only and never modified, so sharing their inode is safe.
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            try:
                Bundle.load(stage)
            except BundleError as e:
                raise RegistryError(f"the stored files of {info.name} v{info.version} fail verification ({e}); "
                                    "the artifact store was damaged: push the bundle again") from e
            os.chmod(stage, 0o777 & ~UMASK)  # mkdtemp makes it private; other users' servers read it
            try:
                os.rename(stage, target)  # refuses to replace a non-empty folder: nothing is swapped under a reader
            except OSError:
                if intact(target, info):
                    return target  # another process built it first
                broken = target.with_name(f".{target.name}.broken-{secrets.token_hex(4)}")
                os.rename(target, broken)
                os.rename(stage, target)
                shutil.rmtree(broken, ignore_errors=True)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return target


def intact(folder: Path, info: VersionInfo) -> bool:
    """A cheap check of an already built folder: the manifest is the stored one and every file has
    its size. The contents were verified when the folder was built from the store, and the files are
    read-only hard links of store objects."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        if sha256_file(manifest) != info.manifest_sha256:
            return False
        bundle = Bundle.load(folder, verify=False)
        if set(bundle.manifest.files) != set(info.files):
            return False
        return all(bundle.path(rel).stat().st_size == e.size for rel, e in bundle.manifest.files.items())
    except (OSError, BundleError):
        return False
