"""Schema 3's `variants` (docs/bundle.md): the model in other formats, each with its file, layout, runtime and
parity; bundles without them stay schema 2, and schema 1 and 2 bundles still load."""

import json

import pytest

from tandem.bundle import (
    SCHEMA_VERSION,
    VARIANTS_SCHEMA,
    Bundle,
    Parity,
    Quantization,
    Software,
    SpecCheck,
    TensorSpec,
    Variant,
    write_manifest,
)
from tandem.errors import BundleError, ConfigError
from tandem.export.formats import CLASSIFIER, EMBEDDING, IMAGE_TO_IMAGE, Tools, parse_formats
from tests.unit.test_bundle import manifest

OUTPUTS = [TensorSpec(name="probabilities", dtype="float32", shape=[1, 2]),
           TensorSpec(name="embedding", dtype="float32", shape=[1, 8])]


def litert(precision="fp32", **kw) -> Variant:
    base = dict(format="litert", precision=precision, file=f"model.{precision}.tflite", layout="NHWC",
                inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[1, 100, 75, 3])], outputs=OUTPUTS,
                signature="serving_default", runtime=Software(name="ai-edge-litert", version="2.3.0"),
                converter=Software(name="litert-torch", version="0.10.0"),
                parity=Parity(images=12, on="test", max_abs=2e-7, top1_agreement=1.0))
    base.update(kw)
    return Variant(**base)


@pytest.fixture()
def variant_bundle(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    for name, data in (("model.onnx", b"onnx fp32"), ("model.int8.onnx", b"onnx int8"),
                       ("model.fp32.tflite", b"tflite fp32"), ("model.int8.tflite", b"tflite int8")):
        (root / name).write_bytes(data)
    write_manifest(root, manifest(variants={"litert-fp32": litert(), "litert-int8": litert("int8")}))
    return root


def test_a_bundle_with_variants_is_schema_3_and_hashes_their_files(variant_bundle):
    b = Bundle.load(variant_bundle)
    assert b.manifest.schema_version == VARIANTS_SCHEMA == SCHEMA_VERSION == 3
    assert {"model.fp32.tflite", "model.int8.tflite"} <= set(b.manifest.files)
    assert b.variant_path("litert-int8") == (variant_bundle / "model.int8.tflite").resolve()
    v = b.manifest.variants["litert-fp32"]
    assert (v.layout, v.runtime.version, v.parity.max_abs, v.signature) == ("NHWC", "2.3.0", 2e-7, "serving_default")
    with pytest.raises(BundleError, match=r"no executorch-fp32 variant .* --formats onnx,executorch"):
        b.variant_path("executorch-fp32")
    (variant_bundle / "model.int8.tflite").write_bytes(b"tflite int9")
    with pytest.raises(BundleError, match=r"model\.int8\.tflite has sha256"):
        Bundle.load(variant_bundle)


def test_a_bundle_without_variants_stays_schema_2_byte_for_byte(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"x")
    (root / "model.int8.onnx").write_bytes(b"y")
    write_manifest(root, manifest())
    raw = json.loads((root / "manifest.json").read_text())
    assert raw["schema_version"] == 2 and "variants" not in raw
    assert Bundle.load(root).manifest.variants == {}


def test_schema_1_and_2_bundles_written_before_variants_still_load(variant_bundle):
    raw = json.loads((variant_bundle / "manifest.json").read_text())
    for name in ("model.fp32.tflite", "model.int8.tflite"):
        raw["files"].pop(name)
    raw.pop("variants")
    for version in (1, 2):
        (variant_bundle / "manifest.json").write_text(json.dumps({**raw, "schema_version": version}))
        b = Bundle.load(variant_bundle)
        assert b.manifest.schema_version == version and b.manifest.variants == {}


def test_a_variant_file_the_files_do_not_list_is_refused(variant_bundle):
    raw = json.loads((variant_bundle / "manifest.json").read_text())
    raw["files"].pop("model.int8.tflite")
    (variant_bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"variant file model\.int8\.tflite \(litert-int8\) is not listed"):
        Bundle.load(variant_bundle)


def test_an_int8_variant_says_how_it_was_quantised_and_the_others_write_no_such_key(variant_bundle):
    q = Quantization(recipe="static_wi8_ai8", weights="int8", activations="int16", calibration_images=256,
                     ranges="min-max", float_ops={"CAST": 1, "SOFTMAX": 1})
    m = Bundle.load(variant_bundle).manifest
    write_manifest(variant_bundle, m.model_copy(update={"variants": m.variants | {
        "litert-int8": m.variants["litert-int8"].model_copy(update={"quantization": q})}}))
    raw = json.loads((variant_bundle / "manifest.json").read_text())
    assert raw["variants"]["litert-int8"]["quantization"]["activations"] == "int16"
    assert "quantization" not in raw["variants"]["litert-fp32"]  # absent, not null: older manifests hash the same
    assert Bundle.load(variant_bundle).manifest.variants["litert-int8"].quantization == q
    with pytest.raises(ValueError, match="a fp32 variant cannot have int8 weights"):
        litert(quantization=q)


@pytest.mark.parametrize(("change", "message"), [
    ({"variants": {"litert-int8": litert()}}, r"variant 'litert-int8' is a litert fp32 model; its key must be 'litert-fp32'"),
    ({"schema_version": 2}, "variants need schema_version 3"),
    ({"variants": {"litert-fp32": litert(inputs=[TensorSpec(name="pixels", dtype="float32", shape=[1, 100, 75, 3])])}},
     "every variant takes the bundle's input, uint8 'pixels' NHWC"),
    ({"variants": {"litert-fp32": litert(layout="NCHW")}}, "uint8 'pixels' NHWC"),
    ({"variants": {"litert-fp32": litert(inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[1, 64, 64, 3])])}},
     r"NHWC \[100, 75, 3\]"),
    ({"variants": {"litert-fp32": litert(outputs=OUTPUTS[:1])}}, "outputs .* are not the bundle's"),
    ({"variants": {"onnx-fp32": litert(format="onnx", file="other.onnx")}}, "is not models.fp32"),
])
def test_variants_keep_the_bundles_conventions(change, message):
    kw = {"variants": {"litert-fp32": litert()}} | change
    with pytest.raises(ValueError, match=message):
        manifest(**kw)


def test_formats_say_what_is_made_and_what_is_missing(tmp_path, monkeypatch):
    missing = Tools(litert_python=tmp_path / "no-venv" / "bin" / "python")
    assert parse_formats("onnx", missing, CLASSIFIER) == frozenset()
    with pytest.raises(ConfigError, match=r"converter's venv is not there .*make install"):
        parse_formats("onnx,litert", missing, CLASSIFIER)
    with pytest.raises(ConfigError, match=r"unknown format 'tflite'; choose from onnx, onnx-fp32"):
        parse_formats("onnx,tflite", missing, CLASSIFIER)
    with pytest.raises(ConfigError, match=r"unknown format 'coreml-int8'; .*coreml, coreml-fp16"):
        parse_formats("coreml-int8", missing, CLASSIFIER)
    with pytest.raises(ConfigError, match=r"converter's venv is not there"):
        parse_formats("litert-int8", missing, IMAGE_TO_IMAGE)
    python = tmp_path / "python"
    python.write_text("")
    found = Tools(litert_python=python)
    assert parse_formats("onnx,litert-int8", found, CLASSIFIER) == {"litert-int8"}
    assert parse_formats(" ONNX , executorch-int8,coreml", found, CLASSIFIER) == {"executorch-int8", "coreml-fp16"}
    assert parse_formats("executorch", found, CLASSIFIER) == {"executorch-fp32", "executorch-int8"}
    # The default: every format whose tools are here (make install installs them all), for a classifier.
    everything = {"litert-fp32", "litert-int8", "executorch-fp32", "executorch-int8", "coreml-fp16"}
    assert parse_formats(None, found) == everything
    assert parse_formats(None, missing, CLASSIFIER) == everything - {"litert-fp32", "litert-int8"}
    # An image-to-image model: LiteRT and ExecuTorch at its training size, fp32 and int8, when asked for.
    assert parse_formats(None, found, IMAGE_TO_IMAGE) == frozenset()
    assert parse_formats("onnx,litert,executorch,coreml", found, IMAGE_TO_IMAGE) == everything
    assert parse_formats("onnx,executorch-int8", found, IMAGE_TO_IMAGE) == {"executorch-int8"}
    # A face embedding: fp32 variants (and Core ML's fp16), when asked for; `litert` names the precisions it gets.
    assert parse_formats(None, found, EMBEDDING) == frozenset()
    assert parse_formats("onnx,litert,executorch,coreml", found, EMBEDDING) == {"litert-fp32", "executorch-fp32",
                                                                               "coreml-fp16"}
    with pytest.raises(ConfigError, match=r"--formats litert-int8: this is a face embedding, and Tandem makes only "
                                          r"coreml-fp16, executorch-fp32, litert-fp32 of it so far; export with "
                                          r"--formats onnx,executorch-fp32$"):
        parse_formats("onnx,litert-int8,executorch", found, EMBEDDING)


def test_a_format_whose_package_is_missing_is_named_with_the_extra_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    tools = Tools(litert_python=tmp_path / "python")
    with pytest.raises(ConfigError, match=r"--formats coreml: coremltools is not installed: pip install 'tandem\[coreml\]'"):
        parse_formats("onnx,coreml", tools, CLASSIFIER)
    assert "coreml-fp16" not in parse_formats(None, tools, CLASSIFIER)


def test_a_variant_that_fails_parity_is_refused_with_the_numbers():
    import re

    import numpy as np

    from tandem.export.variant_parity import ParityPhotos, failed

    photos = ParityPhotos(np.zeros((10, 4, 4, 3), np.uint8), "test", [], onnx_int8_agreement=0.9)
    assert failed("litert-fp32", Parity(images=10, on="test", max_abs=9e-5), photos) is None
    why = failed("litert-fp32", Parity(images=10, on="test", max_abs=2e-3), photos)
    assert why is not None and re.search(r"litert-fp32: .* up to 0\.002 on 10 test photos .* --formats onnx$", why)
    # int8: the bar is 99%, or the int8 ONNX model's own agreement when lower (a barely trained model).
    assert failed("litert-int8", Parity(images=10, on="test", max_abs=0.3, top1_agreement=0.9), photos) is None
    why = failed("litert-int8", Parity(images=10, on="test", max_abs=0.3, top1_agreement=0.8), photos)
    assert why is not None and re.search(r"litert-int8: .* on 80% of 10 test photos \(at least 90% .*litert-fp32", why)
    why = failed("executorch-int8", Parity(images=10, on="test", max_abs=0.3, top1_agreement=0.8), photos)
    assert why is not None and why.endswith("--formats onnx,executorch-fp32")
    # A model without a top class (a face embedding) has no int8 bar to pass: such a file is never written.
    why = failed("litert-int8", Parity(images=10, on="test", max_abs=0.01), photos)
    assert why is not None and re.search(r"no top class to agree on .*--formats onnx,litert-fp32$", why)
    # An image-to-image model's int8: its pictures' PSNR against PyTorch's is the bar.
    assert failed("executorch-int8", Parity(images=10, on="test", max_abs=4.0, psnr_db=30.0), photos) is None
    why = failed("executorch-int8", Parity(images=10, on="test", max_abs=40.0, psnr_db=24.5), photos)
    assert why == ("executorch-int8: its pictures came 24.5 dB from PyTorch's on 10 test photos (at least 30 dB is "
                   "needed), so it is not written; export with fp32 only: --formats onnx,executorch-fp32")


def test_a_variant_whose_outputs_are_not_the_bundles_dtype_is_refused_though_its_top_class_agrees():
    """A quantiser that leaves int8 outputs (ai-edge-quantizer's plain static recipe does) keeps the argmax but
    not the values: the file is refused whatever its agreement, when asked for, and left out with a warning when not."""
    import logging

    import numpy as np

    from tandem.export.variant_parity import ParityPhotos, keep

    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    emb = np.full((2, 8), 0.35, np.float32)
    photos = ParityPhotos(np.zeros((2, 100, 75, 3), np.uint8), "test", [probs, emb], onnx_int8_agreement=1.0)
    int8_out = {"probabilities": np.round(probs * 255 - 128).astype(np.int8), "embedding": np.full((2, 8), 40, np.int8)}
    with pytest.raises(BundleError, match=r"litert-int8: its outputs are not the bundle's \(probabilities is int8, not "
                                          r"float32; embedding is int8, not float32\).*--formats onnx,litert-fp32$"):
        keep("litert-int8", litert("int8"), int8_out, photos, asked=True, log=logging.getLogger("t"))
    assert keep("litert-int8", litert("int8"), int8_out, photos, asked=False, log=logging.getLogger("t")) is None
    kept = keep("litert-int8", litert("int8"), {"probabilities": probs, "embedding": emb}, photos, asked=True,
                log=logging.getLogger("t"))
    assert kept is not None and kept.parity.top1_agreement == 1.0 and kept.parity.max_abs == 0.0

def coreml(**kw) -> Variant:
    check = SpecCheck(spec_ok=True, ops=92, op_types={"conv": 40}, checked=["an ML program"],
                      not_measured="Core ML predicts only on macOS and iOS")
    base = dict(format="coreml", precision="fp16", file="model.mlpackage.zip",
                inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[1, 100, 75, 3])], outputs=OUTPUTS,
                runtime=Software(name="coreml", version="iOS16"), parity=None, spec_check=check)
    return Variant(**(base | kw))


def test_a_core_ml_variant_records_its_spec_check_in_place_of_parity(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    for name in ("model.onnx", "model.int8.onnx", "model.fp32.tflite", "model.mlpackage.zip"):
        (root / name).write_bytes(name.encode())
    write_manifest(root, manifest(variants={"litert-fp32": litert(), "coreml-fp16": coreml()}))
    raw = json.loads((root / "manifest.json").read_text())
    assert raw["variants"]["coreml-fp16"]["parity"] is None
    assert raw["variants"]["coreml-fp16"]["spec_check"]["spec_ok"] is True
    assert "spec_check" not in raw["variants"]["litert-fp32"]  # variants that ran keep their entry as it was
    b = Bundle.load(root)
    assert b.manifest.variants["coreml-fp16"].spec_check.ops == 92
    assert b.variant_path("coreml-fp16").name == "model.mlpackage.zip"


@pytest.mark.parametrize("variant", [
    lambda: litert(parity=None),  # a variant that can run here must have run
    lambda: coreml(spec_check=None),
    lambda: coreml(spec_check=SpecCheck(spec_ok=False, ops=1, not_measured="x")),
])
def test_a_variant_without_parity_needs_a_passed_spec_check_and_must_be_core_ml(variant):
    with pytest.raises(ValueError, match="needs its parity measured at export"):
        variant()


def test_a_variant_may_fix_the_size_an_any_size_bundle_leaves_free_and_nothing_else():
    any_size = [TensorSpec(name="pixels", dtype="uint8", shape=[-1, -1, -1, 3])]
    fixed = litert(inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[1, 64, 64, 3])])
    assert manifest(inputs=any_size, variants={"litert-fp32": fixed}).variants["litert-fp32"] == fixed
    for shape in ([1, 64, 64, 4], [1, 64, 64], [1, 0, 64, 3]):  # channels are not free; the rank is not; no empty side
        with pytest.raises(ValueError, match="a -1 there may be fixed"):
            manifest(inputs=any_size, variants={"litert-fp32": litert(
                inputs=[TensorSpec(name="pixels", dtype="uint8", shape=shape)])})


def test_a_pictures_variant_is_held_to_its_bars_output_by_output_and_uint8_does_not_wrap():
    import numpy as np

    from tandem.export.variant_parity import ParityPhotos, measure, over_bars

    image = np.full((2, 4, 4, 3), 100.5, np.float32)
    pixels = np.full((2, 4, 4, 3), 100, np.uint8)
    photos = ParityPhotos(np.zeros((2, 4, 4, 3), np.uint8), "test", [image, pixels], 0.0,
                          bars={"image": 1e-3, "image_uint8": 1.0})
    names = ["image", "image_uint8"]
    rounded_up = {"image": image + 5e-4, "image_uint8": pixels + 1}  # 100.5 may round either way
    assert measure({"image": image, "image_uint8": pixels - 1}, photos, names).max_abs == 1.0  # not 255
    assert measure({"image": image, "image_uint8": pixels - 1}, photos, names).psnr_db is None  # no picture named
    pictured = ParityPhotos(photos.pixels, "test", [image, pixels], 0.0, picture="image_uint8")
    assert measure({"image": image, "image_uint8": pixels - 1}, pictured, names).psnr_db == round(20 * np.log10(255), 2)
    assert measure({"image": image, "image_uint8": pixels}, pictured, names).psnr_db == 100.0
    assert over_bars("litert-fp32", rounded_up, photos, names) is None
    why = over_bars("litert-fp32", {"image": image + 0.01, "image_uint8": pixels + 2}, photos, names)
    assert why == ("litert-fp32: its outputs differ from PyTorch's on 2 test photos: image by up to 0.01 (at most "
                   "0.001); image_uint8 by up to 2 (at most 1), so it is not written; export without it: --formats onnx")
    assert over_bars("litert-fp32", {"image": image * np.nan, "image_uint8": pixels}, photos, names) is not None
