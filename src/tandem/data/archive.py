"""A training dataset as one archive: a .zip or a .tar (plain, gzip, bzip2 or xz) of class folders.

What `tandem train --remote` packs and uploads and a managed training (POST /v1/trainings) trains
on. An archive comes from anywhere, so it is checked whole before anything is stored or any job
starts, under the rules `.tandem` archives follow (bundle/archive.py's ``member_name`` and
``check_zip_member``): every name a plain relative path (no ``..``, no absolute or drive paths, no
backslashes), every entry a regular file or a folder (no links, devices or encrypted entries), no
name twice, no name both a file and a folder, and caps on the entries and on the bytes they unpack
to. A zip entry that inflates more than ``MAX_RATIO`` to 1 is refused as a bomb: photos do not
compress. Then the dataset's own rules: class folders (optionally inside one top folder, as
``zip -r faces.zip faces/`` makes), each holding its photos directly (JPEG, PNG, BMP or WebP, by
name and by their first bytes), at least two classes, none empty. Names starting with a dot
(``.DS_Store``) and macOS's ``__MACOSX/`` folder are left out, as the folder loader leaves them.

Extraction checks the same again, writes into a staging folder beside the target and renames it
into place only at the end; no entry yields more bytes than it declared.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tandem import atomic
from tandem.bundle.archive import ZIP_ERRORS, check_zip_member, member_name
from tandem.data.catalog import IMAGE_SUFFIXES
from tandem.data.folder import scan_class_folders
from tandem.errors import DataError

INSIDE = "the dataset"
MAX_RATIO = 100  # JPEG and PNG do not compress; a zip entry that inflates more than this is not a photo
RATIO_FLOOR = 1 << 20  # below this many bytes a ratio proves nothing (a tiny blank PNG)
MAX_CLASS_CHARS = 200
_HEAD = 16
_CHUNK = 1 << 20
FORMATS = "JPEG, PNG, BMP or WebP"
FOLDER_HINT = "a dataset archive holds one folder per class with its photos directly inside (CLASS/photo.jpg)"


@dataclass(frozen=True)
class Limits:
    """What an archive may hold: bytes once unpacked, and entries (files and folders)."""

    max_bytes: int = 4 << 30
    max_entries: int = 200_000


@dataclass(frozen=True)
class DatasetSummary:
    format: str  # "zip" or "tar"
    classes: dict[str, int]  # class -> photos, in sorted order
    bytes: int  # unpacked

    @property
    def images(self) -> int:
        return sum(self.classes.values())

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "classes": len(self.classes), "images": self.images, "bytes": self.bytes,
                "per_class": dict(self.classes)}


@dataclass
class _Entry:
    name: str  # checked, as in the archive
    size: int
    head: bytes = b""  # the first bytes (files only)
    member: Any = field(default=None, repr=False)  # the zip's ZipInfo or the tar's TarInfo


def _ignored(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _refuse(message: str) -> DataError:
    return DataError(f"{message}; refusing the archive")


def _open(path: Path) -> tuple[str, Any]:
    if zipfile.is_zipfile(path):
        return "zip", zipfile.ZipFile(path)
    try:
        return "tar", tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"the upload is neither a zip nor a tar archive ({type(e).__name__}); pack the dataset "
                        f"folder as .zip or .tar ({FOLDER_HINT}), or let `tandem train --remote --data DIR` "
                        "pack it") from None


def _zip_entries(zf: zipfile.ZipFile, limits: Limits, read_heads: bool) -> Iterator[tuple[_Entry, bool]]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise _refuse(f"the archive has {len(infos):,} entries, over this server's limit of {limits.max_entries:,}")
    for info in infos:
        if info.filename.endswith("/"):
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) not in (0, stat.S_IFDIR):
                raise _refuse(f"archive entry {info.filename!r} is not a regular file or a folder (a link or a device)")
            yield _Entry(member_name(info.filename.rstrip("/"), INSIDE, DataError), 0), True
            continue
        name = member_name(info.filename, INSIDE, DataError)
        check_zip_member(info, DataError)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
            raise _refuse(f"archive entry {name!r} inflates from {info.compress_size:,} to {info.file_size:,} bytes "
                          f"(over {MAX_RATIO}:1): a zip bomb, not a photo")
        entry = _Entry(name, info.file_size, member=info)
        if read_heads and not _ignored(name):
            with zf.open(info) as f:
                entry.head = f.read(_HEAD)
        yield entry, False


def _tar_entries(tf: tarfile.TarFile, limits: Limits, read_heads: bool) -> Iterator[tuple[_Entry, bool]]:
    count = 0
    for info in tf:  # one forward pass: a compressed tar is read once
        count += 1
        if count > limits.max_entries:
            raise _refuse(f"the archive has more than {limits.max_entries:,} entries, this server's limit")
        raw = info.name[2:] if info.name.startswith("./") else info.name
        if raw in ("", ".", "./"):
            continue  # the archive's own top folder, as `tar -C DIR .` writes it
        name = member_name(raw.rstrip("/") if info.isdir() else raw, INSIDE, DataError)
        if info.isdir():
            yield _Entry(name, 0), True
            continue
        if not info.isreg():
            raise _refuse(f"archive entry {info.name!r} is not a regular file (a link or a device)")
        entry = _Entry(name, info.size, member=info)
        if read_heads and not _ignored(name):
            f = tf.extractfile(info)
            entry.head = f.read(_HEAD) if f is not None else b""
        yield entry, False


def _image_kind(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


@dataclass
class _Layout:
    fmt: str
    files: list[_Entry]
    top: str | None  # the one folder everything is in, left out of the class names
    classes: dict[str, int]
    total: int

    def target(self, entry: _Entry) -> str:
        """Where an entry goes in the extracted folder: CLASS/photo.jpg."""
        return entry.name[len(self.top) + 1:] if self.top else entry.name


def _layout(fmt: str, entries: Iterator[tuple[_Entry, bool]], limits: Limits, check_heads: bool) -> _Layout:
    files: list[_Entry] = []
    folders: set[str] = set()
    seen: set[str] = set()
    total = 0
    for entry, is_dir in entries:
        if entry.name in seen and not is_dir:
            raise _refuse(f"archive entry {entry.name!r} appears twice")
        seen.add(entry.name)
        if _ignored(entry.name):
            continue
        if is_dir:
            folders.add(entry.name)
            continue
        total += entry.size
        if total > limits.max_bytes:
            raise _refuse(f"the archive unpacks to more than {limits.max_bytes:,} bytes, this server's limit")
        files.append(entry)
    names = {f.name for f in files}
    parents = {str(p) for f in files for p in PurePosixPath(f.name).parents if str(p) != "."}
    clash = sorted((parents | folders) & names)
    if clash:
        raise _refuse(f"archive entry {clash[0]!r} is both a file and a folder")
    folders |= parents
    if not files:
        raise DataError(f"the archive holds no photos; {FOLDER_HINT}")
    # One top folder around the class folders (zip -r faces.zip faces/) is left out.
    tops = {f.name.split("/")[0] for f in files} | {d.split("/")[0] for d in folders}
    top = next(iter(tops)) if len(tops) == 1 and all(f.name.count("/") >= 2 for f in files) else None
    classes: dict[str, int] = {}
    for d in folders:
        rel = d[len(top) + 1:] if top else d
        if top and d == top:
            continue
        if "/" not in rel:
            classes.setdefault(rel, 0)
    for f in files:
        rel = f.name[len(top) + 1:] if top else f.name
        parts = rel.split("/")
        if len(parts) == 1:
            raise DataError(f"archive entry {f.name!r} lies outside any class folder; {FOLDER_HINT}")
        if len(parts) > 2:
            raise DataError(f"archive entry {f.name!r} is in a sub-folder of class {parts[0]!r}; {FOLDER_HINT}")
        if PurePosixPath(parts[1]).suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"archive entry {f.name!r} is not a photo ({FORMATS} by its name: "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}); {FOLDER_HINT}: remove other files")
        if check_heads and _image_kind(f.head) is None:
            raise DataError(f"archive entry {f.name!r} is named like a photo but its bytes are not {FORMATS}; "
                            "remove it or put the photo itself there")
        classes[parts[0]] = classes.get(parts[0], 0) + 1
    for name in classes:
        if len(name) > MAX_CLASS_CHARS or not name.isprintable():
            raise DataError(f"class folder {name[:80]!r} is not a usable class name: give 1-{MAX_CLASS_CHARS} "
                            "printable characters")
    empty = sorted(c for c, n in classes.items() if n == 0)
    if empty:
        raise DataError(f"class folder(s) {', '.join(repr(c) for c in empty[:10])} hold no photos; add photos to "
                        "them or leave them out")
    if len(classes) < 2:
        raise DataError(f"a classifier needs at least 2 classes; the archive holds only {next(iter(classes))!r}: "
                        "add a folder of photos per class")
    return _Layout(fmt, files, top, dict(sorted(classes.items())), total)


def _scan(archive: Path, limits: Limits, check_heads: bool, then: Callable[[_Layout, Any], None] | None = None
          ) -> DatasetSummary:
    try:
        fmt, handle = _open(archive)
        with handle:
            entries = (_zip_entries(handle, limits, check_heads) if fmt == "zip"
                       else _tar_entries(handle, limits, check_heads))
            layout = _layout(fmt, entries, limits, check_heads)
            if then is not None:
                then(layout, handle)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{archive}: no such archive") from e
    except (*ZIP_ERRORS, tarfile.TarError) as e:
        raise DataError(f"the archive is damaged ({type(e).__name__}: {e}); pack and send it again") from e
    return DatasetSummary(fmt, layout.classes, layout.total)


def inspect_dataset(archive: Path, limits: Limits = Limits()) -> DatasetSummary:
    """Check a dataset archive (the rules above) without writing anything; DataError (400) says what is wrong."""
    return _scan(archive, limits, check_heads=True)


def extract_dataset(archive: Path, dest: Path, limits: Limits = Limits()) -> DatasetSummary:
    """Check ``archive`` and unpack its photos into the new folder ``dest`` as ``CLASS/photo``, ready for
    `tandem train --data DEST`. Nothing is left at ``dest`` unless every photo came out whole."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise DataError(f"{dest} already exists; unpack into a new folder")

    def write(layout: _Layout, handle: Any) -> None:
        with atomic.staged_dir(dest) as stage:
            for entry in layout.files:
                out = stage / layout.target(entry)
                out.parent.mkdir(parents=True, exist_ok=True)
                src: IO[bytes] | None = (handle.open(entry.member) if layout.fmt == "zip"
                                         else handle.extractfile(entry.member))
                if src is None:
                    raise _refuse(f"archive entry {entry.name!r} cannot be read")
                with src, out.open("xb") as f:
                    _copy_capped(src, f, entry)

    return _scan(archive, limits, check_heads=True, then=write)


def _copy_capped(src: IO[bytes], dst: IO[bytes], entry: _Entry) -> None:
    written = 0
    while chunk := src.read(min(_CHUNK, entry.size + 1 - written)):
        written += len(chunk)
        if written > entry.size:
            raise _refuse(f"archive entry {entry.name!r} unpacks to more than the {entry.size:,} bytes it declares")
        dst.write(chunk)


def pack_dataset(folder: Path, out: Path) -> DatasetSummary:
    """Write the class folders of ``folder`` (what `tandem train --data FOLDER` would read: each class's
    photos, nothing else) as one zip at ``out``: stored, not deflated (photos do not compress), in a fixed
    order with fixed times, so the same folder always gives the same bytes, and so the same sha256."""
    catalog = scan_class_folders(Path(folder))
    total = 0
    with atomic.temp_path_for(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for record in sorted(catalog.records, key=lambda r: (catalog.classes[r.label], r.path.name)):
            info = zipfile.ZipInfo(f"{catalog.classes[record.label]}/{record.path.name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = record.path.stat().st_size
            total += info.file_size
            with record.path.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    counts = catalog.counts()
    return DatasetSummary("zip", dict(sorted(zip(catalog.classes, counts, strict=True))), total)
