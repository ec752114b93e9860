"""A real Tandem server on a free port serving a tiny real bundle, and that bundle's folder for the device."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.testing.bundles import make_bundle
from tests.conftest import make_folder_dataset
from tests.integration.server.serving import Keys, Running, populate, running, test_settings

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]


@pytest.fixture(scope="session")
def device_bundle(tmp_path_factory, lfw_people) -> Path:
    faces = make_folder_dataset(tmp_path_factory.mktemp("dfaces") / "faces", lfw_people, PEOPLE, 2)
    return make_bundle(tmp_path_factory.mktemp("dbundle") / "v1", faces, seed=1)


@pytest.fixture(scope="session")
def lfw_photos(lfw_people) -> list[Path]:
    """Held-out LFW photos (not among the enrolled ones), two per person."""
    return [p for person in PEOPLE for p in sorted((lfw_people / person).glob("*.jpg"))[-2:]]


@pytest.fixture(scope="module")
def server(tmp_path_factory, device_bundle) -> Iterator[tuple[Running, Keys]]:
    settings = test_settings(tmp_path_factory.mktemp("dhome"))
    keys = populate(settings, [device_bundle])
    with running(settings) as srv:
        yield srv, keys


@pytest.fixture()
def blackhole() -> Iterator[str]:
    """A URL whose port accepts connections (kernel backlog) but never answers: every read times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
