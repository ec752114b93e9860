"""`.tandem` archives: a bundle folder as one zip file, to copy or upload as a single file.

An archive comes from anywhere, so extraction trusts nothing in it: every name must be a plain
relative path inside the bundle (no ``..``, no absolute or drive paths, no backslashes), every
entry a regular file (no symlinks, devices or encrypted entries), no name twice, and only the
files the manifest lists. Sizes are capped by the manifest, not the zip: an entry whose zip header
claims another size than the manifest declares is refused before anything is written, and the bytes
that really come out of each entry are cut off past the manifest's size while they are written,
since a zip can lie about them (the manifest itself and the signature have fixed caps). Extraction
writes into a staging folder beside the target and renames it into place only once the bundle
verifies, so a refused archive leaves nothing behind.

The rules for one entry (``member_name``, ``check_zip_member``) are public: a training dataset
uploaded as a zip (tandem.data.archive) is held to the same ones.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tandem import atomic
from tandem.bundle.manifest import MANIFEST, UNHASHED, Bundle
from tandem.errors import BundleError, TandemError

SUFFIX = ".tandem"
# Far above any bundle Tandem writes (a few MB to a few hundred), far below a full disk.
MAX_BYTES = 4 << 30
MAX_ENTRIES = 1000
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 4096  # an Ed25519 signature and its key id, with room to spare
SIGNATURE = "signature"
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# What zipfile and zlib raise on a damaged archive.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError)


def pack(bundle_dir: Path, out: Path) -> Path:
    """Write the verified bundle at ``bundle_dir`` as one archive: manifest.json first, then every
    file the manifest lists, in a fixed order and with fixed timestamps (same bundle, same bytes)."""
    bundle = Bundle.load(bundle_dir)
    names = [MANIFEST, *sorted(bundle.manifest.files)]
    if (bundle.root / "signature").is_file():
        names.insert(1, "signature")
    with atomic.temp_path_for(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in names:
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = (bundle.root / rel).stat().st_size  # zipfile picks zip64 from it
            with (bundle.root / rel).open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    return out


def member_name(name: str, inside: str = "the bundle", error: type[TandemError] = BundleError) -> str:
    """``name`` as a relative POSIX path inside the archive's folder (``inside``, for the message), or
    ``error``: no ``..``, no absolute or drive path, no backslash, no empty part."""
    parts = name.split("/")
    if (not name or "\\" in name or "\0" in name or name.startswith("/") or _DRIVE.match(name)
            or any(p in ("", ".", "..") for p in parts)):
        raise error(f"archive entry {name!r} is not a plain relative path inside {inside}; refusing the archive")
    return str(PurePosixPath(name))


def check_zip_member(info: zipfile.ZipInfo, error: type[TandemError] = BundleError) -> None:
    """A zip entry that is a plain file, neither encrypted nor compressed by an exotic method, or ``error``."""
    mode = info.external_attr >> 16
    if info.flag_bits & 0x1:
        raise error(f"archive entry {info.filename!r} is encrypted; Tandem archives are not")
    # Type bits of a link, folder or device refuse it; none at all (only permissions, as Python's writestr and
    # Windows tools write) is a plain file.
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        raise error(f"archive entry {info.filename!r} is not a regular file (a link or a device); "
                    "refusing the archive")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise error(f"archive entry {info.filename!r} uses compression method {info.compress_type}; "
                    "Tandem archives are stored or deflated")


def _entries(zf: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    """Every file entry by its checked name; directory entries are left out (folders are made as
    files need them)."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BundleError(f"the archive has {len(infos)} entries, over the limit of {MAX_ENTRIES}")
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename.endswith("/") and info.file_size == 0:
            member_name(info.filename.rstrip("/"))
            continue
        name = member_name(info.filename)
        check_zip_member(info)
        if name in files:
            raise BundleError(f"archive entry {name!r} appears twice; refusing the archive")
        files[name] = info
    total = sum(i.file_size for i in files.values())
    if total > max_bytes:
        raise BundleError(f"the archive unpacks to {total:,} bytes, over the limit of {max_bytes:,}")
    folders = {str(p) for n in files for p in PurePosixPath(n).parents}
    clash = sorted(folders & set(files))
    if clash:
        raise BundleError(f"archive entry {clash[0]!r} is both a file and a folder; refusing the archive")
    return files


def _listed(zf: zipfile.ZipFile, files: dict[str, zipfile.ZipInfo]) -> dict[str, int]:
    """The names the archive's manifest lists and the size it declares for each (for the manifest and
    the signature, which it does not list: their caps), read (size-capped) before anything is written."""
    if MANIFEST not in files:
        raise BundleError(f"the archive has no {MANIFEST} at its top level; it is not a bundle archive")
    if files[MANIFEST].file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"the archive's {MANIFEST} declares {files[MANIFEST].file_size:,} bytes; too large")
    with zf.open(files[MANIFEST]) as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    try:
        listed = json.loads(raw)["files"]
        if not isinstance(listed, dict):
            raise TypeError
        sizes = {name: entry["size"] for name, entry in listed.items()}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes.values()):
            raise TypeError("a file's size is not a whole number of bytes")
    except (ValueError, RecursionError, KeyError, TypeError) as e:
        raise BundleError(f"the archive's {MANIFEST} does not list its files as a JSON object: {e!r:.200}") from e
    return {**sizes, MANIFEST: MAX_MANIFEST_BYTES, SIGNATURE: MAX_SIGNATURE_BYTES}


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: Path, declared: int, budget: int) -> int:
    """Write one entry, stopping as soon as it yields more than its manifest declares (``declared``; the
    zip's own claim is believed no further) or ``budget`` allows."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    limit = min(declared, budget)
    with zf.open(info) as src, dst.open("xb") as out:
        while chunk := src.read(min(_CHUNK, limit + 1 - written)):
            written += len(chunk)
            if written > limit:
                raise BundleError(f"archive entry {info.filename!r} unpacks to more than the {declared:,} bytes "
                                  "its manifest declares (or past the size limit); refusing the archive")
            out.write(chunk)
    return written


def unpack(archive: Path, dest: Path, max_bytes: int = MAX_BYTES) -> Bundle:
    """Extract ``archive`` into the new folder ``dest`` and return the verified bundle there.

    ``dest`` must not exist. BundleError for anything wrong with the archive; nothing is written
    outside ``dest``, and nothing at all unless the whole bundle verifies.
    """
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"{dest} already exists; unpack into a new folder")
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _entries(zf, max_bytes)
            declared = _listed(zf, files)
            extra = sorted(set(files) - set(declared))
            if extra:
                raise BundleError(f"archive entry {extra[0]!r} is not listed in its manifest; refusing the archive")
            for name, info in files.items():
                if name not in UNHASHED and info.file_size != declared[name]:
                    raise BundleError(f"archive entry {name!r} says it holds {info.file_size:,} bytes, its manifest "
                                      f"says {declared[name]:,}; refusing the archive")
                if info.file_size > declared[name]:
                    raise BundleError(f"archive entry {name!r} says it holds {info.file_size:,} bytes, more than "
                                      f"the {declared[name]:,} such a file may; refusing the archive")
            with atomic.staged_dir(dest) as stage:
                budget = max_bytes
                for name, info in files.items():
                    budget -= _copy(zf, info, stage / name, declared[name], budget)
                bundle = Bundle.load(stage)
    except BundleError:
        raise
    except FileNotFoundError as e:
        raise BundleError(f"{archive}: no such archive") from e
    except ZIP_ERRORS as e:
        raise BundleError(f"{archive}: not a readable {SUFFIX} archive ({type(e).__name__}: {e}); "
                          "copy it again") from e
    except OSError as e:  # a damaged archive's offsets, or a folder that cannot be written (a full disk)
        raise BundleError(f"cannot unpack {archive} into {dest} ({e}): the archive is damaged or the "
                          "folder not writable") from e
    return Bundle(dest.resolve(), bundle.manifest)
