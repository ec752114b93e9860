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


@pytest.mark.parametrize("through_a_link", [False, True])
def test_lfw_run_trained_elsewhere_finds_the_same_images_here(data_home, tmp_path, through_a_link):
    """Paths are compared resolved: a data home reached through a symbolic link (../shared often
    is one) is the same place."""
    if through_a_link:
        (tmp_path / "data").symlink_to(data_home.resolve(), target_is_directory=True)
        data_home = tmp_path / "data"
    here = _lfw_run(data_home)
    moved = dataclasses.replace(here, root="/gpu-box/data/lfw_home/lfw_funneled", data_home=data_home)
    catalog = moved.catalog()
    assert catalog.root.resolve() == Path(here.root).resolve()
    assert [r.path.resolve() for r in catalog.records] == [r.path.resolve() for r in here.catalog().records]


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
