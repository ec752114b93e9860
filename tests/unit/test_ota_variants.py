"""Variant delivery's rules (docs/ota.md, "Variants"): which variant a device gets for its runtime and
precision, what a release's restriction offers, the runtime and platform checks, a release without the
device's runtime not covering it, and the device refusing an answer for another runtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tandem.bundle import Manifest, TensorSpec
from tandem.bundle.manifest import Parity, Software, Variant
from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec
from tandem.device.payload import Expected, Payload, check_claims
from tandem.errors import InvalidRequest, SignatureError
from tandem.registry.ota import variants
from tandem.registry.ota.rollout import Decision, Device, Rule, decide

PIXELS = TensorSpec(name="pixels", dtype="uint8", shape=[-1, 8, 6, 3])
OUT = TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2])
SPEC = PreprocessSpec(height=8, width=6, normalize_in_graph=NormalizeSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))


def variant(fmt: str, precision: str, file: str) -> Variant:
    return Variant(format=fmt, precision=precision, file=file, inputs=[PIXELS.model_copy(update={"shape": [1, 8, 6, 3]})],
                   outputs=[OUT], runtime=Software(name="rt", version="1"),
                   parity=Parity(images=1, on="test", max_abs=0.0))


def manifest(**extra: Variant) -> Manifest:
    return Manifest(name="m", version=3, inputs=[PIXELS], outputs=[OUT], preprocessing=SPEC,
                    labels=["a", "b"], models={"fp32": "model.onnx", "int8": "model.int8.onnx"},
                    variants={k.replace("_", "-"): v for k, v in extra.items()})


LITERT = manifest(litert_fp32=variant("litert", "fp32", "model.tflite"),
                  litert_int8=variant("litert", "int8", "model.int8.tflite"))


def test_a_bundle_without_variants_offers_its_onnx_models():
    assert variants.available(manifest()) == {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}
    assert variants.available(LITERT)["litert-int8"] == "model.int8.tflite"


@pytest.mark.parametrize(("runtime", "precision", "have", "want"), [
    ("litert", "int8", ["litert-fp32", "litert-int8"], "litert-int8"),
    ("litert", "int8", ["litert-fp32"], "litert-fp32"),  # int8 asked, none made: fp32, as for ONNX
    ("coreml", "fp32", ["coreml-fp16", "onnx-fp32"], "coreml-fp16"),  # the runtime's only precision
    ("litert", "fp16", ["litert-int8", "litert-fp32"], "litert-fp32"),  # the most accurate left
    ("executorch", "fp32", ["onnx-fp32", "litert-fp32"], None),
])
def test_the_variant_of_the_runtime_asked_for_the_precision_preferred(runtime, precision, have, want):
    assert variants.choose(have, runtime, precision) == want


def test_a_restriction_names_keys_or_formats():
    have = variants.available(LITERT)
    assert set(variants.allowed(have, [])) == set(have)
    assert set(variants.allowed(have, ["onnx", "litert-int8"])) == {"onnx-fp32", "onnx-int8", "litert-int8"}
    assert variants.check_restriction([" LiteRT-int8", "onnx", "onnx"]) == ["litert-int8", "onnx"]
    for bad in ("tflite", "litert-fp64", "litert-int8-x", ""):
        with pytest.raises(InvalidRequest, match="neither a format"):
            variants.check_restriction([bad])
    variants.check_offers(LITERT, ["onnx", "litert-int8"])
    with pytest.raises(InvalidRequest, match=r"m v3 has no variant coreml, litert-fp16 \(it has litert-fp32"):
        variants.check_offers(LITERT, ["coreml", "litert-fp16", "onnx-int8"])


def test_runtimes_and_platforms_are_checked_with_the_accepted_values_named():
    assert variants.RUNTIMES == ("onnx", "litert", "executorch", "coreml")
    with pytest.raises(InvalidRequest, match="'runtime' must be one of onnx, litert, executorch, coreml, not 'tflite'"):
        variants.check_runtime("tflite")
    with pytest.raises(InvalidRequest, match="'precision' must be one of fp32, fp16, int8"):
        variants.check_precision("bf16")
    variants.check_platform_runs("toaster", "onnx")  # ONNX runs everywhere: the platform is only for targeting
    variants.check_platform_runs(None, "coreml")  # no platform said: not judged
    variants.check_platform_runs("ios", "coreml")
    with pytest.raises(InvalidRequest, match="send a platform of android, ios, linux, macos, web, windows"):
        variants.check_platform_runs("toaster", "litert")
    with pytest.raises(InvalidRequest, match=r"coreml does not run on android .* runtimes for android: onnx, litert, "
                                             r"executorch"):
        variants.check_platform_runs("android", "coreml")


def test_a_release_without_a_model_for_the_runtime_does_not_cover_the_device():
    rules = [Rule.of(1, runtimes={"onnx", "litert"}), Rule.of(2, runtimes={"onnx"})]
    assert decide("m", "c", rules, {}, Device("d", None, runtime="onnx")) == Decision(2, "install")
    assert decide("m", "c", rules, {}, Device("d", None, runtime="litert")) == Decision(1, "install")
    assert decide("m", "c", rules, {}, Device("d", 1, runtime="litert")) == Decision(1, "install")  # stays on v1
    assert decide("m", "c", rules, {}, Device("d", None, runtime="coreml")) is None
    assert decide("m", "c", rules, {}, Device("d", None)) == Decision(2, "install")  # runtime not judged
    assert decide("m", "c", [Rule.of(1)], {}, Device("d", None, runtime="coreml")) == Decision(1, "install")


def _payload(variant_key: str | None) -> Payload:
    now = datetime.now(UTC)
    files = {"manifest.json": {"sha256": "a" * 64, "size": 1, "url": "/v1/ota/files/" + "a" * 64}}
    return Payload.model_validate({
        "schema": 2, "model": "m", "version": 2, "action": "install", "reason": "release", "channel": "c",
        "device_id": "d", "issued_at": now, "expires_at": now + timedelta(hours=1), "sequence": 1,
        "manifest_sha256": "a" * 64, "files": files, **({"variant": variant_key} if variant_key else {})})


def test_the_device_refuses_a_model_of_another_runtime_than_it_asked_for():
    litert, onnx = Expected("m", "c", "d", 1, 0, runtime="litert"), Expected("m", "c", "d", 1, 0, runtime="onnx")
    check_claims(_payload("litert-int8"), litert)
    check_claims(_payload("onnx-fp32"), onnx)
    check_claims(_payload(None), onnx)  # a server from before variants sends its ONNX model, naming no variant
    check_claims(_payload("litert-int8"), Expected("m", "c", "d", 1, 0))  # asked for no runtime: not judged
    with pytest.raises(SignatureError, match="offers litert-int8, but this device asked for the onnx variant"):
        check_claims(_payload("litert-int8"), onnx)
    with pytest.raises(SignatureError, match=r"offers no variant .* asked for the litert variant"):
        check_claims(_payload(None), litert)
