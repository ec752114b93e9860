import logging

import pytest

from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec
from tandem.data.folder import scan_class_folders
from tandem.data.lfw import LFW_CROP, load_lfw
from tandem.data.pixels import load_pixels
from tandem.errors import DataError
from tests.conftest import write_png

SPEC = PreprocessSpec(height=20, width=15, normalize_in_graph=NormalizeSpec(mean=(0.5,) * 3, std=(0.2,) * 3))


def make(root, classes):
    for name, n in classes.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            write_png(d / f"{i}.png", seed=i)
    return root


def test_scan_finds_classes_and_skips_other_files(tmp_path):
    root = make(tmp_path / "d", {"cat": 3, "dog": 2})
    (root / "cat" / "notes.txt").write_text("hello")
    c = scan_class_folders(root)
    assert c.classes == ["cat", "dog"] and c.counts() == [3, 2]
    assert c.skipped_files == 1


def test_unreadable_images_are_skipped_with_a_count_and_a_warning(tmp_path, caplog):
    root = make(tmp_path / "d", {"cat": 3, "dog": 2})
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    c = scan_class_folders(root)
    with caplog.at_level(logging.WARNING):
        pixels, labels, kept = load_pixels(c, SPEC)
    assert pixels.shape == (5, 20, 15, 3) and len(kept) == 5 and labels.tolist() == [0, 0, 0, 1, 1]
    assert "skipped 1 unreadable" in caplog.text
    assert c.notes == ["skipped 1 unreadable image file(s) of 6"]


def test_empty_class_is_an_error_naming_it(tmp_path):
    root = make(tmp_path / "d", {"cat": 3, "dog": 2})
    (root / "emu").mkdir()
    with pytest.raises(DataError, match="no images: emu"):
        scan_class_folders(root)


def test_one_class_is_an_error(tmp_path):
    root = make(tmp_path / "d", {"cat": 3})
    with pytest.raises(DataError, match="at least 2 classes"):
        scan_class_folders(root)


def test_missing_and_flat_folders_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        scan_class_folders(tmp_path / "nothing")
    flat = tmp_path / "flat"
    flat.mkdir()
    write_png(flat / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_class_folders(flat)


def test_lfw_min_faces_filter_matches_the_documented_counts(data_home):
    c = load_lfw(data_home, min_faces=20)
    assert len(c.classes) == 47 and len(c.records) == 1851
    assert c.crop == LFW_CROP and c.source == "lfw"
    assert len(load_lfw(data_home, min_faces=70).classes) == 4
    unseen = load_lfw(data_home, min_faces=10, max_faces=20)
    assert len(unseen.classes) == 119 - 47
    assert not set(unseen.classes) & set(c.classes)


def test_missing_lfw_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="TANDEM_DATA_HOME"):
        load_lfw(tmp_path)
