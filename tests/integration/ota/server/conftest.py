"""Fixtures for the OTA server tests: real tiny ONNX bundles, a real registry, a real server in a thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.testing.bundles import make_bundle
from tests.integration.ota.server.helpers import Env, head_update, new_env


@pytest.fixture(scope="session")
def ota_bundles(tmp_path_factory) -> list[Path]:
    """Versions 1-3 of model "faces": v2 changes only the classifier head of v1 (a small delta), v3 is
    trained anew (every weight differs)."""
    root = tmp_path_factory.mktemp("ota-bundles")
    v1 = make_bundle(root / "v1", None, seed=1)
    return [v1, head_update(v1, root / "v2", seed=2), make_bundle(root / "v3", None, seed=3)]


@pytest.fixture()
def env(tmp_path, ota_bundles) -> Env:
    """A registry with versions 1-3 pushed and one API key per scope; nothing released yet."""
    return new_env(tmp_path / "home", ota_bundles)
