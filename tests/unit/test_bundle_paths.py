"""Manifest paths are checked in their normal form (bundle.check_paths, at push), and an archive's
members are capped at the sizes the manifest declares, not those the zip claims (archive.py)."""

from __future__ import annotations

import json
import zipfile

import pytest

from tandem.bundle import FileEntry, check_paths
from tandem.bundle.archive import pack, unpack
from tandem.errors import BundleError
from tests.unit.test_bundle import bundle_dir, manifest  # noqa: F401  (a fixture, and the manifest it writes)

E = FileEntry(sha256="0" * 64, size=1)
OK = {"model.onnx": E, "model.int8.onnx": E}


@pytest.mark.parametrize(("extra", "words"), [
    ({"../escape": E}, "'..' part"),
    ({"a/../model.onnx": E}, "'..' part"),
    ({"./model.onnx": E}, "'.' or '..' part"),
    ({"a//b": E}, "empty"),
    ({"/etc/passwd": E}, "not a relative path"),
    ({"C:model": E}, "not a relative path"),
    ({"a\\b": E}, "not a relative path"),
    ({"a\nb": E}, "not a relative path"),
    ({"x" * 300: E}, "at most 255"),
    ({"Model.onnx": E}, "the same file on a file system that folds case"),
    ({"cafe\u0301.bin": E}, "normal form NFC"),
    ({"signature": E}, "that name is the bundle's own"),
    ({"extra": E, "extra/g.npz": E}, "also a folder"),
])
def test_bad_manifest_paths_are_refused(extra, words):
    with pytest.raises(BundleError, match=words):
        check_paths(manifest(files={**OK, **extra}))


def test_plain_paths_pass():
    check_paths(manifest(files={**OK, "extra/gallery.npz": E, "caf\u00e9.bin": E}))
    with pytest.raises(BundleError, match="which its files do not list"):
        check_paths(manifest(files={"model.onnx": E}))  # models names model.int8.onnx


def rewrite(archive, out, sizes: dict[str, int] | None = None, manifest_sizes: dict[str, int] | None = None):
    """A copy of ``archive`` whose zip headers claim ``sizes`` and whose manifest declares ``manifest_sizes``."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json" and manifest_sizes:
                m = json.loads(data)
                for name, size in manifest_sizes.items():
                    m["files"][name]["size"] = size
                data = json.dumps(m).encode()
            dst.writestr(info, data)
    if sizes:  # patch the central directory's uncompressed sizes in place: a zip that lies
        raw = bytearray(out.read_bytes())
        with zipfile.ZipFile(out) as zf:
            for info in zf.infolist():
                if info.filename in sizes:
                    at = raw.rfind(b"PK\x01\x02", 0, len(raw))
                    while at != -1:
                        name_len = int.from_bytes(raw[at + 28:at + 30], "little")
                        if raw[at + 46:at + 46 + name_len].decode() == info.filename:
                            raw[at + 24:at + 28] = sizes[info.filename].to_bytes(4, "little")
                            break
                        at = raw.rfind(b"PK\x01\x02", 0, at)
        out.write_bytes(bytes(raw))
    return out


def test_an_archive_member_is_capped_at_the_manifests_size(bundle_dir, tmp_path):  # noqa: F811
    archive = pack(bundle_dir, tmp_path / "b.tandem")
    # The zip claims more than the manifest declares: refused before anything is written.
    liar = rewrite(archive, tmp_path / "liar.tandem", sizes={"model.onnx": 50_000_000})
    with pytest.raises(BundleError, match="says it holds 50,000,000 bytes, its manifest says 1,600"):
        unpack(liar, tmp_path / "out1")
    assert not (tmp_path / "out1").exists()
    # Zip and manifest agree on a size smaller than the bytes: no more than it is read (zipfile stops at the
    # size, and its CRC then fails), nothing is written.
    short = rewrite(archive, tmp_path / "short.tandem", sizes={"model.onnx": 100},
                    manifest_sizes={"model.onnx": 100})
    with pytest.raises(BundleError, match=r"Bad CRC-32 for file 'model\.onnx'"):
        unpack(short, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    assert unpack(archive, tmp_path / "out3").manifest.files["model.onnx"].size == 1600
