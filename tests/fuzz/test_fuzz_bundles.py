"""Bundles from elsewhere: manifest.json of any content, file names that try to leave the folder,
and `.tandem` archives built to attack the extractor (zip-slip, absolute names, links, duplicate
names, size lies, bombs). Loading gives a verified bundle or BundleError; unpacking writes nothing
outside its target folder, and nothing at all when it refuses."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.bundle import MANIFEST, Bundle, archive, sha256_file, write_manifest
from tandem.errors import BundleError
from tests.fuzz import tally
from tests.fuzz.strategies import json_values, mutated
from tests.unit.test_bundle import manifest

HOSTILE_NAMES = ["../x", "../../etc/passwd", "/etc/passwd", "/tmp/x", "a/../../x", "sub/../model.onnx", "", ".",
                 "..", "./model.onnx", "x\0y", "C:\\x", "C:x", "a\\..\\x", "model.onnx/", "extra//gallery.npz",
                 "~/x", "link", "link/inside", "dir", "\u202emodel.onnx", "a" * 300, "model.onnx\n"]
NAMES = st.sampled_from(["model.onnx", "model.int8.onnx", "extra/gallery.npz", "manifest.json", "signature",
                         *HOSTILE_NAMES]) | st.text(max_size=12)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A folder holding a real bundle ``b``, a secret file beside it and a link from inside to it."""
    root = tmp_path_factory.mktemp("sandbox")
    b = root / "b"
    b.mkdir()
    (b / "model.onnx").write_bytes(b"fp32 model bytes" * 100)
    (b / "model.int8.onnx").write_bytes(b"int8" * 50)
    (b / "extra").mkdir()
    (b / "extra" / "gallery.npz").write_bytes(b"gallery")
    (root / "secret").write_bytes(b"not part of any bundle")
    write_manifest(b, manifest())
    os.symlink(root / "secret", b / "link")  # after write_manifest, which would hash it
    os.symlink(root, b / "dir")
    return root


def _good_manifest(sandbox: Path) -> dict:
    return json.loads((sandbox / "b" / MANIFEST).read_text())


def _files_entry(sandbox: Path, rel: str) -> dict:
    """A files entry with the true size and hash of what ``rel`` names, when that exists: the
    reader must refuse the name itself, not just a wrong hash."""
    try:
        p = sandbox / "b" / rel
        if p.is_file():
            return {"sha256": sha256_file(p), "size": p.stat().st_size}
    except (ValueError, OSError):
        pass
    return {"sha256": "0" * 64, "size": 0}


@st.composite
def manifests(draw: st.DrawFn, good: dict, sandbox: Path) -> bytes:
    """A manifest that is mostly right: a few fields replaced, removed, or files added under
    hostile names; or its text damaged; or any JSON at all."""
    m = copy.deepcopy(good)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "delete", "file", "model", "nest"]))
        key = draw(st.sampled_from(sorted(m)))
        if action == "replace":
            m[key] = draw(json_values())
        elif action == "delete":
            m.pop(key, None)
        elif action == "file" and isinstance(m.get("files"), dict):
            rel = draw(NAMES)
            m["files"][rel] = _files_entry(sandbox, rel) if draw(st.booleans()) else draw(json_values())
        elif action == "model" and isinstance(m.get("models"), dict):
            rel = draw(NAMES)
            m["models"][draw(st.sampled_from(["fp32", "int8", "fp16"]))] = rel
            if isinstance(m.get("files"), dict):
                m["files"][rel] = _files_entry(sandbox, rel)
        elif action == "nest":
            depth = draw(st.integers(1, 3000))
            m[key] = json.loads("[" * min(depth, 900) + "]" * min(depth, 900)) if depth < 900 else "DEEP"
    text = json.dumps(m)
    if "DEEP" in text:  # deeper than any JSON parser's recursion
        text = text.replace('"DEEP"', "[" * 3000 + "]" * 3000, 1)
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("100", "1" * draw(st.integers(4000, 5000)), 1)  # past Python's int digit limit
    data = text.encode()
    choice = draw(st.integers(0, 9))
    if choice == 0:
        data = draw(mutated(data))
    elif choice == 1:
        data = json.dumps(draw(json_values())).encode()
    return data


@settings(max_examples=tally.budget(300))
@given(st.data())
def test_manifests_load_or_are_refused(sandbox, data):
    b = sandbox / "b"
    good = (b / MANIFEST).read_bytes()
    (b / MANIFEST).write_bytes(data.draw(manifests(_good_manifest(sandbox), sandbox)))
    try:
        bundle = tally.run("manifest", lambda: Bundle.load(b), (BundleError,))
    finally:
        (b / MANIFEST).write_bytes(good)
    if bundle is not None:
        root = b.resolve()
        for rel in bundle.manifest.files:
            assert root in bundle.path(rel).parents


@pytest.mark.parametrize(("text", "message"), [
    ('{"schema_version": 1, "name": ' + "[" * 5000 + "]" * 5000 + "}", "not valid JSON"),  # RecursionError
    ('{"schema_version": 1, "version": ' + "7" * 5000 + "}", "not valid JSON"),  # past the int digit limit
])
def test_manifests_that_break_the_json_parser_are_bundle_errors(sandbox, tmp_path, text, message):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=message):
        Bundle.load(tmp_path)


@pytest.mark.parametrize(("name", "message"), [
    ("x\0y", "not a usable path"),  # ValueError from the OS layer
    ("a" * 300, "cannot read"),  # OSError: file name too long
])
def test_file_names_the_os_refuses_are_bundle_errors(sandbox, name, message):
    b = sandbox / "b"
    good = (b / MANIFEST).read_bytes()
    m = json.loads(good)
    m["files"][name] = {"sha256": "0" * 64, "size": 0}
    (b / MANIFEST).write_text(json.dumps(m))
    try:
        with pytest.raises(BundleError, match=message):
            Bundle.load(b)
    finally:
        (b / MANIFEST).write_bytes(good)


# --- .tandem archives -------------------------------------------------------------------------

@st.composite
def entries(draw: st.DrawFn, sandbox: Path) -> list[tuple[str, bytes, int, int]]:
    """(name, bytes, unix mode, compression) of each archive entry: mostly the bundle's own files,
    plus hostile names, links, folders and duplicates."""
    b = sandbox / "b"
    real = {rel: (b / rel).read_bytes() for rel in ["model.onnx", "model.int8.onnx", "extra/gallery.npz", MANIFEST]}
    out = [(rel, data, stat.S_IFREG | 0o644, zipfile.ZIP_DEFLATED) for rel, data in real.items()
           if draw(st.integers(0, 9))]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(NAMES)
        kind = draw(st.sampled_from(["file", "link", "dir", "fifo", "dup"]))
        mode = {"file": stat.S_IFREG | 0o644, "link": stat.S_IFLNK | 0o777, "dir": stat.S_IFDIR | 0o755,
                "fifo": stat.S_IFIFO | 0o644, "dup": stat.S_IFREG | 0o644}[kind]
        if kind == "dup" and out:
            name = draw(st.sampled_from([e[0] for e in out]))
        data = b"../../secret" if kind == "link" else draw(st.binary(max_size=64))
        out.append((name, data, mode, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))))
    return draw(st.permutations(out))


def build(entries: list[tuple[str, bytes, int, int]], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we mean to write
        with zipfile.ZipFile(path, "w") as zf:
            for name, data, mode, method in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.filename = name  # as given: ZipInfo would cut at a NUL
                info.external_attr = mode << 16
                info.compress_type = method
                zf.writestr(info, data)
    return path


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def unpack_checked(sandbox: Path, archive_path: Path, max_bytes: int = archive.MAX_BYTES) -> Bundle | None:
    """Unpack into a fresh folder and check that nothing changed outside it."""
    work = Path(tempfile.mkdtemp(dir=sandbox))
    dest = work / "out" / "bundle"
    before = listing(sandbox)
    try:
        bundle = tally.run("archive", lambda: archive.unpack(archive_path, dest, max_bytes), (BundleError,))
        after = listing(sandbox)
        inside = {p for p in after if p.startswith(str(dest.relative_to(sandbox)) + os.sep)}
        assert after - inside - {str(dest.relative_to(sandbox)), str(dest.parent.relative_to(sandbox))} == before
        if bundle is None:
            assert not dest.exists()
        else:
            for p in dest.rglob("*"):
                assert not p.is_symlink() and (p.is_dir() or p.is_file())
            assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} <= {
                MANIFEST, "signature", *bundle.manifest.files}
        return bundle
    finally:
        shutil.rmtree(work)


@settings(max_examples=tally.budget(200))
@given(st.data())
def test_hostile_archives_are_refused_without_writing_outside(sandbox, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = build(data.draw(entries(sandbox)), Path(tmp) / "x.tandem")
        unpack_checked(sandbox, path)


@pytest.fixture(scope="module")
def good_archive(sandbox, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("archive") / "b.tandem"
    archive.pack(sandbox / "b", path)
    return path.read_bytes()


@settings(max_examples=tally.budget(300))
@given(st.data())
def test_damaged_archives_are_refused_without_writing_outside(sandbox, good_archive, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.tandem"
        path.write_bytes(data.draw(mutated(good_archive, max_edits=3)))
        unpack_checked(sandbox, path)


def test_a_packed_bundle_unpacks_verified_and_the_same(sandbox, good_archive, tmp_path):
    (tmp_path / "b.tandem").write_bytes(good_archive)
    bundle = unpack_checked(sandbox, tmp_path / "b.tandem")
    assert bundle is not None and bundle.manifest == Bundle.load(sandbox / "b").manifest
    again = archive.pack(sandbox / "b", tmp_path / "again.tandem")
    assert again.read_bytes() == good_archive  # same bundle, same bytes


@pytest.mark.parametrize("name", ["../escaped", "/tmp/tandem-absolute", "a/../../escaped", "C:\\escaped", "x\\..\\y"])
def test_zip_slip_names_are_refused(sandbox, tmp_path, name):
    good = [(rel, (sandbox / "b" / rel).read_bytes(), stat.S_IFREG | 0o644, zipfile.ZIP_DEFLATED)
            for rel in ["model.onnx", "model.int8.onnx", "extra/gallery.npz", MANIFEST]]
    path = build([*good, (name, b"payload", stat.S_IFREG | 0o644, zipfile.ZIP_STORED)], tmp_path / "slip.tandem")
    with pytest.raises(BundleError, match="not a plain relative path"):
        archive.unpack(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not Path("/tmp/tandem-absolute").exists()
    assert not (sandbox / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_symlink_entries_and_duplicates_are_refused(sandbox, tmp_path):
    good = [(rel, (sandbox / "b" / rel).read_bytes(), stat.S_IFREG | 0o644, zipfile.ZIP_DEFLATED)
            for rel in ["model.onnx", "model.int8.onnx", "extra/gallery.npz", MANIFEST]]
    link = build([(good[0][0], b"/etc/passwd", stat.S_IFLNK | 0o777, zipfile.ZIP_STORED), *good[1:]],
                 tmp_path / "link.tandem")
    with pytest.raises(BundleError, match="not a regular file"):
        archive.unpack(link, tmp_path / "out")
    dup = build([*good, good[0]], tmp_path / "dup.tandem")
    with pytest.raises(BundleError, match="appears twice"):
        archive.unpack(dup, tmp_path / "out")
    extra = build([*good, ("unlisted.py", b"import os", stat.S_IFREG | 0o644, zipfile.ZIP_STORED)],
                  tmp_path / "extra.tandem")
    with pytest.raises(BundleError, match="not listed in its manifest"):
        archive.unpack(extra, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _bomb(tmp_path: Path, sandbox: Path, declared: int | None = None) -> Path:
    """The bundle plus 64 MiB of zeros (about 64 KiB deflated), its size declared as ``declared``."""
    b = sandbox / "b"
    path = build([(rel, (b / rel).read_bytes(), stat.S_IFREG | 0o644, zipfile.ZIP_DEFLATED)
                  for rel in ["model.onnx", "model.int8.onnx", "extra/gallery.npz", MANIFEST]]
                 + [("model.onnx.zeros", b"\0" * (64 << 20), stat.S_IFREG | 0o644, zipfile.ZIP_DEFLATED)],
                 tmp_path / "bomb.tandem")
    assert path.stat().st_size < 200_000
    if declared is not None:  # lie in both the local header and the central directory
        raw = bytearray(path.read_bytes())
        for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            at = raw.find(sig, raw.find(b"model.onnx.zeros") - 60 if sig == b"PK\x03\x04" else 0)
            while at >= 0:
                name_at = at + (30 if sig == b"PK\x03\x04" else 46)
                if raw[name_at : name_at + 16] == b"model.onnx.zeros":
                    raw[at + offset : at + offset + 4] = struct.pack("<I", declared)
                at = raw.find(sig, at + 4)
        path.write_bytes(bytes(raw))
    return path


def test_a_decompression_bomb_is_refused_before_anything_is_written(sandbox, tmp_path):
    path = _bomb(tmp_path, sandbox)
    with pytest.raises(BundleError, match=r"unpacks to 67,1.* bytes, over the limit of 1,048,576"):
        archive.unpack(path, tmp_path / "out", max_bytes=1 << 20)
    assert listing(tmp_path) == {"bomb.tandem"}


def test_a_bomb_that_lies_about_its_size_stops_at_the_declared_size(sandbox, tmp_path):
    path = _bomb(tmp_path, sandbox, declared=1000)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("model.onnx.zeros").file_size == 1000
    with pytest.raises(BundleError):
        archive.unpack(path, tmp_path / "out", max_bytes=1 << 20)
    assert listing(tmp_path) == {"bomb.tandem"}


def test_unpack_never_overwrites(sandbox, good_archive, tmp_path):
    (tmp_path / "b.tandem").write_bytes(good_archive)
    (tmp_path / "out").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        archive.unpack(tmp_path / "b.tandem", tmp_path / "out")
