"""A run folder trained on another machine (a GPU box) still exports here: LFW runs find their
images under this machine's TANDEM_DATA_HOME (the data_home its opener gives), and only if they are
the very same files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tandem.data.lfw import load_lfw
from tandem.data.split import stratified_split
from tandem.errors import DataError
from tandem.training.run import RunData


def _lfw_run(data_home: Path) -> RunData:
    catalog = load_lfw(data_home, min_faces=70)
    return RunData.from_catalog(catalog, stratified_split([r.label for r in catalog.records], 0.1, 0.2, seed=0))


def test_lfw_run_trained_elsewhere_finds_the_same_images_here(data_home):
    here = _lfw_run(data_home)
    moved = dataclasses.replace(here, root="/gpu-box/data/lfw_home/lfw_funneled", data_home=data_home)
    catalog = moved.catalog()
    assert catalog.root == Path(here.root)
    assert [r.path for r in catalog.records] == [r.path for r in here.catalog().records]


def test_lfw_run_refuses_data_that_differs(data_home):
    here = _lfw_run(data_home)
    moved = dataclasses.replace(here, root="/gpu-box/lfw", fingerprint="0" * 64, data_home=data_home)
    with pytest.raises(DataError, match="fingerprint differs"):
        moved.catalog()
    renamed = dataclasses.replace(here, root="/gpu-box/lfw", files=[f + ".gone" for f in here.files],
                                  data_home=data_home)
    with pytest.raises(DataError, match="lacks"):
        renamed.catalog()


def test_folder_run_with_its_data_gone_says_so(tmp_path):
    run = RunData(root=str(tmp_path / "gone"), source="folder", classes=["a", "b"], files=[], labels=[],
                  crop={"mode": "none"}, split={"train": [], "val": [], "test": []}, fingerprint="x")
    with pytest.raises(DataError, match="is gone"):
        run.catalog()
