"""torch → ONNX with a dynamic batch axis, uint8 NHWC pixels in."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tandem.models.mobilenet import EmbeddingNet, PixelModel

# onnxscript and onnx_ir report every graph rewrite at INFO (65-100 lines an export); Tandem shows its
# own progress, and their warnings still come through.
for _name in ("onnxscript", "onnx_ir"):
    logging.getLogger(_name).setLevel(logging.WARNING)

INPUT = "pixels"
OUTPUTS = ("probabilities", "embedding")
OPSET = 18


def export_onnx(net: EmbeddingNet, path: Path, height: int, width: int) -> None:
    model = PixelModel(net).eval()
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    onnx_program = torch.onnx.export(
        model,
        (example,),
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_shapes={"pixels": {0: batch}},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    onnx_program.save(str(path), external_data=False)
