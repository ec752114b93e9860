"""Fixtures several integration modules share because they are slow to make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_folder_dataset
from tests.integration.cli import tandem

VARIANT_PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]
VARIANT_FORMATS = "onnx,litert,executorch,coreml"


@pytest.fixture(scope="session")
def variant_bundle(tmp_path_factory, lfw_people) -> Path:
    """A tiny classifier trained on real LFW photos of ``VARIANT_PEOPLE`` (its run folder beside it, ``run``),
    exported with every variant (``tandem export --formats onnx,litert,executorch,coreml``): made once per
    session, as the conversions and their parity checks take minutes. Tests copy it before changing it. Needs
    .venv-litert, ai-edge-litert, executorch and coremltools (make install): without them the export fails,
    never skips (mark the test litert, executorch and coreml)."""
    root = tmp_path_factory.mktemp("variants")
    make_folder_dataset(root / "faces", lfw_people, VARIANT_PEOPLE, 8)
    tandem("train", "--data", root / "faces", "--out", root / "run", "--epochs", "1", "--name", "tiny",
           "--min-faces", "1", "--batch-size", "16", "--stem-stride", "2", "--no-progress", "--seed", "3")
    proc = tandem("export", root / "run", "--out", root / "bundle", "--formats", VARIANT_FORMATS, "--json")
    # The converters' and the runtimes' chatter stays in the debug log.
    assert proc.stderr == "", proc.stderr
    assert json.loads(proc.stdout)["schema_version"] == 3
    return root / "bundle"
