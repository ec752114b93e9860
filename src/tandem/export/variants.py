"""A bundle's `variants` (docs/bundle.md, "Variants"), whatever its model: the ONNX models' entries with their
parity, and the LiteRT, ExecuTorch and Core ML files, each converted, checked and written into the stage.

The exporters of classifiers (exporter.py) and of face embeddings (embed_export.py) both call these with their
pixel model (uint8 NHWC in, the bundle's outputs in order out), its outputs' specs and the parity photos.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from tandem.bundle import Software, TensorSpec, Variant
from tandem.bundle.preprocess import PreprocessSpec
from tandem.export.formats import Tools
from tandem.export.variant_parity import ParityPhotos, measure


def onnx_variants(inputs: list[TensorSpec], outputs: list[TensorSpec], files: dict[str, str],
                  got: dict[str, dict[str, np.ndarray]], photos: ParityPhotos) -> dict[str, Variant]:
    """The ONNX models (``files``: precision → file) as variants (a bundle with variants lists all its models
    there), with their parity: ``got`` holds each one's outputs by name on ``photos``."""
    names = [t.name for t in outputs]
    return {f"onnx-{precision}": Variant(
        format="onnx", precision=precision, file=file, layout="NHWC",  # type: ignore[arg-type]
        inputs=inputs, outputs=outputs, runtime=Software(name="onnxruntime", version=metadata.version("onnxruntime")),
        converter=Software(name="torch", version=torch.__version__.split("+")[0]),
        parity=measure(got[precision], photos, names)) for precision, file in files.items()}


def other_variants(model: torch.nn.Module, stage: Path, keys: frozenset[str], tools: Tools, spec: PreprocessSpec,
                   labels: list[str], outputs: list[TensorSpec], calibration: np.ndarray, photos: ParityPhotos,
                   asked: bool) -> dict[str, Variant]:
    """The LiteRT, ExecuTorch and Core ML ``keys`` of ``model`` written into ``stage`` (each checked before)."""
    others: dict[str, Variant] = {}

    def executorch_and_coreml() -> None:
        if any(k.startswith("executorch-") for k in keys):
            from tandem.export.executorch_export import export_executorch

            others.update(export_executorch(model, stage, keys, spec, labels, outputs, calibration, photos, asked=asked))
        if "coreml-fp16" in keys:
            from tandem.export.coreml_export import export_coreml

            others.update(export_coreml(model, stage, spec.height, spec.width, outputs, asked=asked))

    variants: dict[str, Variant] = {}
    if any(k.startswith("litert-") for k in keys):
        from tandem.export.litert_export import export_litert

        # LiteRT converts in a process of its own: the others convert here meanwhile.
        variants = export_litert(model, stage, keys, tools.litert_python, spec, labels, outputs, calibration,
                                 photos, asked=asked, meanwhile=executorch_and_coreml)
    else:
        executorch_and_coreml()
    return variants | others
