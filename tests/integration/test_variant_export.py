"""`tandem export --formats onnx,litert,executorch,coreml` on a tiny classifier trained on real LFW photos (the
session's ``variant_bundle``, made once for every module that needs one):
the variants' manifest entries, their parity measured by running them (ai-edge-litert, ExecuTorch's Python
runtime) on real photos, Core ML's spec check, and the SDK's LiteRT and ExecuTorch runners against ONNX's.

Marked `litert`, `executorch` and `coreml`: it needs LiteRT's converter venv (.venv-litert), ai-edge-litert,
executorch and coremltools, which `make install` installs; without them the export fails with the message that
says so, and so does this test — no skip.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tandem.bundle import Bundle
from tandem.bundle.archive import pack, unpack
from tandem.bundle.executorch_runtime import ExecuTorchModel
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.runtime import OnnxModel
from tests.integration.cli import tandem, tandem_json
from tests.integration.conftest import VARIANT_PEOPLE

pytestmark = [pytest.mark.integration, pytest.mark.litert, pytest.mark.executorch, pytest.mark.coreml]
PEOPLE = VARIANT_PEOPLE
RUNNERS = {"litert": LiteRtModel, "executorch": ExecuTorchModel}


@pytest.fixture(scope="module")
def bundle_dir(variant_bundle) -> Path:
    """The session's bundle with every variant (tests/integration/conftest.py): one export for every module."""
    return variant_bundle


FILES = {"litert-fp32": "model.tflite", "litert-int8": "model.int8.tflite",
         "executorch-fp32": "model.pte", "executorch-int8": "model.int8.pte", "coreml-fp16": "model.mlpackage.zip"}


def test_every_variant_is_written_with_its_manifest_entry(bundle_dir):
    m = Bundle.load(bundle_dir).manifest
    assert set(m.variants) == {"onnx-fp32", "onnx-int8", *FILES}
    assert set(FILES.values()) <= set(m.files)
    for key, file in FILES.items():
        v = m.variants[key]
        assert (v.format, v.precision, v.file, v.layout) == (*key.split("-"), file, "NHWC")
        assert [(t.name, t.dtype, t.shape) for t in v.inputs] == [("pixels", "uint8", [1, 100, 75, 3])]
        assert [(t.name, t.dtype, t.shape) for t in v.outputs] == [("probabilities", "float32", [1, 4]),
                                                                  ("embedding", "float32", [1, 128])]
    assert m.variants["litert-fp32"].signature == "serving_default"
    assert m.variants["litert-int8"].runtime.name == "ai-edge-litert" and m.variants["litert-int8"].runtime.version.startswith("2.3")
    # litert-int8 is the fp32 file quantised by ai-edge-quantizer (litert-torch's own int8 lowering is broken).
    assert (m.variants["litert-fp32"].converter.name, m.variants["litert-int8"].converter.name) == \
        ("litert-torch", "ai-edge-quantizer")
    # The recipe is named: int8 weights and activations, calibrated on the training photos (8 a person here).
    q = m.variants["litert-int8"].quantization
    assert (q.recipe, q.weights, q.activations, q.ranges) == ("static_wi8_ai8", "int8", "int8", "min-max")
    assert q.calibration_images == m.training["train_images"] and {"CAST", "SOFTMAX"} <= set(q.float_ops)
    # The stem stays float (the first convolution and the first depthwise one), every other convolution is int8.
    assert (q.float_ops["CONV_2D"], q.float_ops["DEPTHWISE_CONV_2D"]) == (1, 1)
    assert m.variants["litert-fp32"].quantization is None
    assert (m.variants["executorch-int8"].runtime.name, m.variants["executorch-int8"].runtime.version[:3]) == ("executorch", "1.5")
    core = m.variants["coreml-fp16"]
    assert (core.runtime.name, core.runtime.version, core.converter.name) == ("coreml", "iOS16", "coremltools")


def test_the_variants_that_run_here_pass_parity_measured_on_real_photos(bundle_dir):
    m = Bundle.load(bundle_dir).manifest
    onnx_int8 = m.variants["onnx-int8"].parity.top1_agreement
    for fmt in ("litert", "executorch"):
        fp32, int8 = m.variants[f"{fmt}-fp32"].parity, m.variants[f"{fmt}-int8"].parity
        for parity in (fp32, int8):
            assert parity.on == "test" and parity.images == m.metrics["test_images"] > 0
        assert fp32.max_abs <= 1e-4 and fp32.top1_agreement == 1.0
        assert int8.max_abs > 0 and int8.top1_agreement >= min(0.99, onnx_int8)
        assert m.files[FILES[f"{fmt}-int8"]].size < 0.4 * m.files[FILES[f"{fmt}-fp32"]].size
    # The size target: LiteRT int8 is at most 0.3× its fp32 file (its quantisation vectors shared).
    assert m.files[FILES["litert-int8"]].size <= 0.3 * m.files[FILES["litert-fp32"]].size
    assert m.variants["onnx-fp32"].parity.max_abs == m.metrics["max_abs_onnx_torch"]


def test_the_core_ml_variant_is_an_fp16_ml_program_whose_spec_was_checked(bundle_dir):
    from tandem.export.coreml_export import check_spec

    bundle = Bundle.load(bundle_dir)
    core = bundle.manifest.variants["coreml-fp16"]
    assert core.parity is None  # Core ML predicts only on Apple's systems: said, not faked
    check = core.spec_check
    assert check.spec_ok and "macOS" in check.not_measured
    assert check.op_types["conv"] >= 10 and check.ops == sum(check.op_types.values()) and "const" not in check.op_types
    assert any("RGB image, 75 wide and 100 high" in c for c in check.checked)
    # One file in the bundle, the .mlpackage folder inside it, as Xcode takes it.
    names = zipfile.ZipFile(bundle.variant_path("coreml-fp16")).namelist()
    assert "model.mlpackage/Manifest.json" in names and "model.mlpackage/Data/com.apple.CoreML/model.mlmodel" in names
    # The check finds a program that is not what the manifest says.
    record, failed = check_spec(bundle.variant_path("coreml-fp16"), 64, 64, bundle.manifest.outputs[:1])
    assert not record.spec_ok and len(failed) == 2 and "64 wide and 64 high" in failed[0]


@pytest.mark.parametrize("fmt", ["litert", "executorch"])
def test_the_sdk_runs_the_variant_with_onnx_answers(bundle_dir, lfw_people, fmt):
    bundle = Bundle.load(bundle_dir)
    onnx = OnnxModel.open(bundle)
    photos = [sorted((lfw_people / p).glob("*.jpg"))[-1] for p in PEOPLE]  # photos it never trained on
    pixels = onnx.pixels_from_files(photos)
    want = onnx.run(pixels)
    got = RUNNERS[fmt].open(bundle).run(pixels)
    for name in ("probabilities", "embedding"):
        assert got[name].shape == want[name].shape and np.abs(got[name] - want[name]).max() <= 1e-4
    int8 = RUNNERS[fmt].open(bundle, "int8").run(pixels)
    assert int8["probabilities"].shape == (4, 4) and np.allclose(int8["probabilities"].sum(1), 1, atol=1e-3)


def test_the_variants_travel_in_a_tandem_archive(bundle_dir, tmp_path):
    archive = pack(bundle_dir, tmp_path / "tiny.tandem")
    copy = unpack(archive, tmp_path / "copy")
    assert set(copy.manifest.variants) == set(Bundle.load(bundle_dir).manifest.variants)
    assert (copy.root / "model.mlpackage.zip").read_bytes() == (bundle_dir / "model.mlpackage.zip").read_bytes()


def test_unknown_formats_are_refused_and_info_lists_the_variants(bundle_dir, tmp_path):
    # The classifier's run folder serves: the refusal comes from --formats, before any export work.
    proc = tandem("export", bundle_dir.parent / "run", "--out", tmp_path / "b", "--formats", "onnx,coreml-int8", ok=False)
    assert proc.returncode != 0 and "unknown format 'coreml-int8'" in proc.stderr
    assert tandem_json("info", bundle_dir)["variants"]["executorch-int8"]["precision"] == "int8"
    shown = tandem("info", bundle_dir).stdout
    for words in ("litert-int8", "ai-edge-litert 2.3", "model.int8.tflite", "executorch-int8", "model.int8.pte",
                  "coreml-fp16", "not run: spec checked"):
        assert words in shown
