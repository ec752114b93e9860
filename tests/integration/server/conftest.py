"""Fixtures for the server tests: tiny real bundles (two versions) enrolled on real LFW photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.testing.bundles import make_bundle
from tests.conftest import make_folder_dataset

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]


@pytest.fixture(scope="session")
def faces(tmp_path_factory, lfw_people) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("faces") / "faces", lfw_people, PEOPLE, 5)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, faces) -> tuple[Path, Path]:
    """Versions 1 and 2 of model 'faces': same interface, different weights, both enrolled."""
    root = tmp_path_factory.mktemp("bundles")
    return make_bundle(root / "v1", faces, seed=1), make_bundle(root / "v2", faces, seed=2)


@pytest.fixture(scope="session")
def photos(lfw_people) -> list[Path]:
    """Held-out LFW photos (not among the enrolled ones)."""
    return [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in PEOPLE]


@pytest.fixture(scope="module")
def http(served):
    """An httpx client with the predict key for the module's ``served`` fixture: ``(server, keys)``."""
    server, keys = served
    with server.client(keys.predict) as c:
        yield c
