"""torch → ONNX with a dynamic batch axis, uint8 NHWC pixels in.

torch.onnx's exporter speaks about its own internals: FutureWarnings and UserWarnings from torch
(e.g. "`isinstance(treespec, LeafSpec)` is deprecated") and, through onnxscript and onnx_ir, an INFO
line for every graph rewrite (65-100 an export). A Tandem user can act on none of them, so an export
sends its warnings to the debug log, and the CLI shows those loggers' DEBUG and INFO lines only with
``tandem -v`` (cli/output.py).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import torch

from tandem.models.mobilenet import EmbeddingNet, PixelModel

log = logging.getLogger(__name__)

INPUT = "pixels"
OUTPUTS = ("probabilities", "embedding")
OPSET = 18


@contextlib.contextmanager
def warnings_to_debug_log(logger: logging.Logger = log) -> Iterator[None]:
    """Within the block, a warning that the active filters let through is logged at DEBUG on
    ``logger`` instead of printed. The filters stay as they are (a test's "error" still raises)."""
    def to_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
               file: TextIO | None = None, line: str | None = None) -> None:
        logger.debug("%s from %s:%d: %s", category.__name__, filename, lineno, message)

    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.showwarning = to_log
        yield


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
               output_names: Sequence[str], spatial: bool = False) -> None:
    """``model`` traced on ``example`` (its first axis the batch, dynamic) to an ONNX file at ``path``;
    ``spatial``: axes 1 and 2 (an NHWC image's height and width) are dynamic too."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    axes = {0: batch}
    if spatial:
        axes |= {1: torch.export.Dim("height", min=16, max=8192), 2: torch.export.Dim("width", min=16, max=8192)}
    with warnings_to_debug_log():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes={input_name: axes},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
        assert program is not None  # torch returns None only from the legacy exporter (dynamo=False)
        program.save(str(path), external_data=False)


def export_onnx(net: EmbeddingNet, path: Path, height: int, width: int) -> None:
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    write_onnx(PixelModel(net).eval(), example, path, INPUT, OUTPUTS)
