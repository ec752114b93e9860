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

if "PYTEST_XDIST_WORKER" in os.environ:
    # GNU readline, loaded in the controlling pytest, exports the terminal's size (80x24 with no terminal) into the
    # environment its xdist workers inherit; a Rich console made while COLUMNS is set keeps that width for good, so
    # the CLI's messages would wrap on a worker where they do not in a serial run.
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


# `make test` runs the suite on pytest-xdist workers (-n N --dist loadfile). Each file is one unit of work, so a
# module's fixtures (a served server, a trained bundle) are made once; files that share an expensive session
# fixture are one unit too (else each worker would make it); and the longest units start first, so the run does
# not end with one worker finishing a long file alone. (xdist's own loadgroup cannot be used: it renames node ids
# in a way pytest 9 no longer sees.) Seconds a unit took here (junit times), rounded: only the
# order matters; a unit missing from the table runs after these, in collection order.
SHARED_UNITS = {
    # variant_bundle: one train + export in four formats (~2 min).
    "tests/integration/test_variant_export.py": "variants",
    "tests/integration/ota/test_variant_updates.py": "variants",
}
UNIT_SECONDS = {  # measured on a loaded machine, 2026-12-03
    "variants": 950, "tests/integration/test_celebmatch_open_set.py": 680, "tests/integration/test_pipeline.py": 610,
    "tests/integration/test_readme.py": 610, "tests/integration/test_demo.py": 600,
    "tests/integration/test_deepart.py": 470, "tests/integration/test_first_hour.py": 350,
    "tests/integration/web/test_parity.py": 220, "tests/unit/test_delta.py": 170, "tests/fuzz/test_api_schema.py": 170,
    "tests/integration/ota/test_device_updater.py": 150, "tests/security/browser/test_page_as_device.py": 150,
    "tests/integration/test_registry.py": 140, "tests/integration/test_advise_video.py": 120,
    "tests/security/browser/test_page_sinks.py": 110, "tests/integration/web/test_browser_app.py": 85,
    "tests/integration/ota/server/test_cli.py": 80, "tests/faults/test_ota_faults.py": 80,
    "tests/unit/test_data_parallel.py": 80,
}


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return SHARED_UNITS.get(path, path)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: `-p no:xdist` must still run the suite
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Units(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return Units(config, log)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # on an xdist worker: the order in which the controller hands out units
        items.sort(key=lambda item: -UNIT_SECONDS.get(_unit(item.nodeid), 0.0))  # stable: a unit stays together


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

