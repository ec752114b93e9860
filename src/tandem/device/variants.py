"""The model variants the Python SDK runs: the ONNX model with ONNX Runtime, the LiteRT variant with
ai-edge-litert (docs/ota.md, "Variants"). ExecuTorch and Core ML variants are for native apps.

``open_model`` gives either as a :data:`DeviceModel`: what ``HybridModel`` and ``ModelUpdater.load`` run, with
the manifest's preprocessing and labels, from a file or from bytes decrypted in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tandem.bundle import Manifest
from tandem.bundle.litert_runtime import LiteRtModel
from tandem.bundle.preprocess import PreprocessSpec
from tandem.bundle.runtime import OnnxModel
from tandem.errors import BundleError, ConfigError

RUNTIMES = ("onnx", "litert")  # what this SDK can run (a check's "runtime")
DEFAULT_RUNTIME = "onnx"


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"the Python SDK runs {' or '.join(RUNTIMES)} models, not {runtime!r}: ExecuTorch and Core ML "
                          "variants are for native apps (docs/ota.md)")
    return runtime


def variant_key(runtime: str, precision: str) -> str:
    return f"{runtime}-{precision}"


def variant_file(manifest: Manifest, key: str) -> str | None:
    """The file of variant ``key`` (``onnx-int8``, ``litert-fp32``): the ONNX ones are ``models``'."""
    runtime, _, precision = key.partition("-")
    if runtime == "onnx" and precision in manifest.models:
        return manifest.models[precision]
    variant = manifest.variants.get(key)
    return variant.file if variant is not None else None


class LiteRtLocal:
    """A LiteRT variant as the device runs it: the interface of ``OnnxModel`` that HybridModel and the runners
    use (``run``, the spec, labels, input and output names), on LiteRT's interpreter."""

    any_size = False  # a LiteRT file has a fixed height and width (and batch 1: run() goes photo by photo)

    def __init__(self, model: LiteRtModel) -> None:
        self.litert = model
        self.spec: PreprocessSpec = model.spec
        self.labels = model.labels
        self.precision = model.precision
        self.input_name = model.variant.inputs[0].name
        self.output_names = model.output_names
        self.label = model.label

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self.litert.run(pixels)


DeviceModel = OnnxModel | LiteRtLocal


def open_model(manifest: Manifest, key: str, source: Path | bytes, threads: int | None = None) -> DeviceModel:
    """Variant ``key`` of a bundle from its file or its bytes, ready to run; ModelError when the runtime cannot
    load it, ConfigError when this SDK cannot run that format."""
    runtime, _, precision = key.partition("-")
    check_runtime(runtime)
    if runtime == "onnx":
        if precision not in manifest.models:
            raise BundleError(f"{manifest.name} has no ONNX {precision} model (it has {', '.join(manifest.models)})")
        return OnnxModel(source, manifest.preprocessing, manifest.labels, precision, threads)
    variant = manifest.variants.get(key)
    if variant is None:
        raise BundleError(f"{manifest.name} has no {key} variant (it has {', '.join(manifest.variants) or 'none'})")
    return LiteRtLocal(LiteRtModel(source, variant, manifest.preprocessing, manifest.labels, threads,
                                   label=f"{manifest.name} {key}"))
