import hashlib
import os
import stat

import pytest

from tandem.errors import BundleError, RegistryError
from tandem.registry.artifacts import LocalStore


@pytest.fixture()
def store(tmp_path):
    return LocalStore(tmp_path / "objects")


def leftovers(store):
    return sorted(p.name for p in store.root.iterdir() if p.name.startswith("."))


def test_put_file_stores_a_read_only_copy_named_by_its_sha256(store, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"weights" * 1000)
    digest = store.put_file(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    obj = store.path(digest)
    assert obj == store.root / digest[:2] / digest[2:]
    assert obj.read_bytes() == src.read_bytes() and not os.path.samefile(obj, src)
    assert not obj.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert store.exists(digest) and store.size(digest) == 7000
    with store.open(digest) as f:
        assert f.read(7) == b"weights"
    assert leftovers(store) == []


def test_storing_the_same_content_again_is_a_no_op(store, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    digest = store.put_file(a)
    before = store.path(digest).stat()
    assert store.put_file(b) == digest
    assert store.put_file(b, expected_sha256=digest) == digest
    assert store.put_bytes(b"same bytes") == digest
    after = store.path(digest).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in store.root.iterdir()] == [digest[:2]]


def test_a_file_that_does_not_match_its_expected_hash_is_refused_and_nothing_is_left(store, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"the real bytes")
    claimed = hashlib.sha256(b"what the manifest says").hexdigest()
    with pytest.raises(BundleError, match=r"model.onnx has sha256 .* expected .*changed while it was being stored"):
        store.put_file(src, expected_sha256=claimed)
    assert not store.exists(claimed)
    assert not store.exists(hashlib.sha256(b"the real bytes").hexdigest())
    assert leftovers(store) == []


def test_a_copy_that_fails_part_way_leaves_no_object_and_no_temporary_file(store, tmp_path):
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(IsADirectoryError):
        store.put_file(tmp_path / "a-folder")
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_put_bytes_and_missing_or_malformed_addresses(store):
    digest = store.put_bytes(b'{"manifest": true}\n')
    assert store.path(digest).read_bytes() == b'{"manifest": true}\n'
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(missing)
    with pytest.raises(RegistryError, match=f"object {missing} is missing from the artifact store"):
        store.path(missing)
    for bad in ("../../etc/passwd", "ABC", digest.upper()):
        with pytest.raises(RegistryError, match="is not a sha256"):
            store.exists(bad)


def test_a_damaged_object_is_replaced_when_its_content_is_stored_again(store, tmp_path):
    # What `_materialise` tells the user to do when verification fails: "push the bundle again".
    src = tmp_path / "model.onnx"
    src.write_bytes(b"the real weights")
    digest = store.put_file(src)
    obj = store.path(digest)
    obj.chmod(0o644)
    obj.write_bytes(b"bit-rotten weig!")  # same size, other bytes
    assert store.put_file(src, expected_sha256=digest) == digest
    assert store.path(digest).read_bytes() == b"the real weights"
    obj.chmod(0o644)
    obj.write_bytes(b"bit-rotten weig!")
    assert store.put_bytes(b"the real weights") == digest
    assert store.path(digest).read_bytes() == b"the real weights"
    assert leftovers(store) == []
