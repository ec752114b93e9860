import pytest

from tandem import atomic


def test_write_bytes_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.bin"
    atomic.write_bytes(p, b"one")
    atomic.write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]


def test_temp_path_keeps_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic.temp_path_for(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_staged_dir_swaps_on_success_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "bundle"
    with atomic.staged_dir(target) as stage:
        (stage / "a").write_text("v1")
    assert (target / "a").read_text() == "v1"

    with pytest.raises(ValueError), atomic.staged_dir(target) as stage:
        (stage / "a").write_text("v2-half")
        raise ValueError("export failed")
    assert (target / "a").read_text() == "v1"

    with atomic.staged_dir(target) as stage:
        (stage / "b").write_text("v2")
    assert sorted(x.name for x in target.iterdir()) == ["b"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bundle"]
