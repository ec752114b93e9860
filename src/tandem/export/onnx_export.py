"""torch → ONNX with a dynamic batch axis, uint8 NHWC pixels in."""

from __future__ import annotations

from pathlib import Path

import torch

from tandem.models.mobilenet import EmbeddingNet, PixelModel

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
