"""`tandem export --formats onnx,litert` on a tiny classifier trained on real LFW photos: the LiteRT variants'
manifest entries, their parity measured with ai-edge-litert, and the SDK's LiteRT runner against ONNX's.

Marked `litert`: it needs LiteRT's converter venv (.venv-litert) and ai-edge-litert, which `make install`
installs; without them the export fails with the message that says so, and so does this test — no skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tandem.bundle import Bundle
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.runtime import OnnxModel
from tests.conftest import make_folder_dataset
from tests.integration.cli import tandem, tandem_json

pytestmark = [pytest.mark.integration, pytest.mark.litert]
PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, lfw_people) -> Path:
    root = tmp_path_factory.mktemp("litert")
    make_folder_dataset(root / "faces", lfw_people, PEOPLE, 8)
    tandem("train", "--data", root / "faces", "--out", root / "run", "--epochs", "1", "--name", "tiny",
           "--min-faces", "1", "--batch-size", "16", "--stem-stride", "2", "--no-progress", "--seed", "3")
    proc = tandem("export", root / "run", "--out", root / "bundle", "--formats", "onnx,litert", "--json")
    assert proc.stderr == "", proc.stderr  # the converter's and the interpreter's chatter stay in the debug log
    assert json.loads(proc.stdout)["schema_version"] == 3
    return root / "bundle"


def test_litert_variants_are_written_with_their_manifest_entries_and_parity(bundle_dir):
    m = Bundle.load(bundle_dir).manifest
    assert set(m.variants) == {"onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8"}
    assert {"model.tflite", "model.int8.tflite"} <= set(m.files)
    for key, file in (("litert-fp32", "model.tflite"), ("litert-int8", "model.int8.tflite")):
        v = m.variants[key]
        assert (v.format, v.file, v.layout, v.signature) == ("litert", file, "NHWC", "serving_default")
        assert [(t.name, t.dtype, t.shape) for t in v.inputs] == [("pixels", "uint8", [1, 100, 75, 3])]
        assert [t.name for t in v.outputs] == ["probabilities", "embedding"]
        assert v.runtime.name == "ai-edge-litert" and v.runtime.version.startswith("2.3")
        assert v.converter is not None and v.converter.name == "litert-torch"
        assert v.parity.on == "test" and v.parity.images == m.metrics["test_images"] > 0
    assert m.variants["litert-fp32"].parity.max_abs <= 1e-4
    assert m.variants["litert-fp32"].parity.top1_agreement == 1.0
    assert m.variants["litert-int8"].parity.top1_agreement >= min(0.99, m.variants["onnx-int8"].parity.top1_agreement)
    assert m.variants["onnx-fp32"].parity.max_abs == m.metrics["max_abs_onnx_torch"]
    assert m.files["model.int8.tflite"].size < 0.4 * m.files["model.tflite"].size


def test_the_sdk_runs_the_litert_variant_with_onnx_answers(bundle_dir, lfw_people):
    bundle = Bundle.load(bundle_dir)
    onnx = OnnxModel.open(bundle)
    photos = [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in PEOPLE]  # photos it never trained on
    pixels = onnx.pixels_from_files(photos)
    want = onnx.run(pixels)
    got = LiteRtModel.open(bundle).run(pixels)
    for name in ("probabilities", "embedding"):
        assert got[name].shape == want[name].shape and np.abs(got[name] - want[name]).max() <= 1e-4
    int8 = LiteRtModel.open(bundle, "int8").run(pixels)
    assert int8["probabilities"].shape == (4, 4) and np.allclose(int8["probabilities"].sum(1), 1, atol=1e-3)


def test_formats_not_made_yet_are_refused_and_info_lists_the_variants(bundle_dir, tmp_path):
    # The classifier's run folder serves: the refusal comes from --formats, before any export work.
    proc = tandem("export", bundle_dir.parent / "run", "--out", tmp_path / "b", "--formats", "onnx,coreml", ok=False)
    assert proc.returncode != 0 and "does not write coreml yet" in proc.stderr
    assert tandem_json("info", bundle_dir)["variants"]["litert-int8"]["precision"] == "int8"
    shown = tandem("info", bundle_dir).stdout
    assert "litert-int8" in shown and "ai-edge-litert 2.3" in shown and "model.int8.tflite" in shown
