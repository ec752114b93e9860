"""Shared fixtures. LFW comes from TANDEM_DATA_HOME (the Makefile points it at ../shared/datasets)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """A CLI command run in process (CliRunner) sets up logging for the process (basicConfig, force=True):
    put the root logger back after each test, so a later test's stderr holds only what it wrote itself."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_home() -> Path:
    home = Path(os.environ.get("TANDEM_DATA_HOME", REPO.parent / "shared" / "datasets"))
    if not (home / "lfw_home" / "lfw_funneled").is_dir():
        pytest.fail(f"LFW not found under {home}: set TANDEM_DATA_HOME to the folder holding lfw_home/")
    return home


@pytest.fixture(scope="session")
def lfw_people(data_home: Path) -> Path:
    return data_home / "lfw_home" / "lfw_funneled"


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server (moto's, its own process on loopback), started once, for the tests that
    put artifacts in object storage; each takes a bucket of its own (``s3.new_bucket()``)."""
    from tandem.testing.s3 import s3_server

    with s3_server() as server:
        yield server


def make_folder_dataset(root: Path, lfw_people: Path, people: list[str], per_person: int) -> Path:
    """An image-folder dataset (one sub-folder per class) copied from real LFW photos."""
    for name in people:
        d = root / name
        d.mkdir(parents=True)
        for src in sorted((lfw_people / name).glob("*.jpg"))[:per_person]:
            shutil.copy(src, d / src.name)
    return root


@pytest.fixture()
def folder_dataset(tmp_path: Path, lfw_people: Path) -> Path:
    return make_folder_dataset(tmp_path / "faces", lfw_people, ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"], 8)


def write_png(path: Path, h: int = 40, w: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs) with Ray Serve's proxy, shared by every Ray test of the session;
    started on first use, stopped at the end."""
    from tests.integration.ray_serving import local_cluster

    with local_cluster() as cluster:
        yield cluster
