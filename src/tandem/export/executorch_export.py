"""A model's ExecuTorch variants (``.pte``; a face embedding gets fp32 only): lowered to XNNPACK here, run with
ExecuTorch's Python runtime on real photos and kept only if they reproduce the PyTorch model (docs/bundle.md,
"Variants").

ExecuTorch installs beside Tandem's torch (the ``executorch`` extra), so this runs in Tandem's own venv: the
checkpoint's network with its uint8 NHWC input, cast and normalisation (PixelModel) goes through
torch.export at batch 1 → ``to_edge_transform_and_lower`` with the XNNPACK partitioner → an ExecuTorch
program. int8 is PT2E static quantisation with the XNNPACK quantizer (symmetric, per-channel weights, int8
activations), calibrated on the same training photos as the int8 ONNX model, with the stem (as in LiteRT's int8)
and the classifier left float.
"""

from __future__ import annotations

import logging
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tandem.bundle import Parity, Software, TensorSpec, Variant
from tandem.bundle.executorch_runtime import ExecuTorchModel, quiet_import
from tandem.bundle.preprocess import PreprocessSpec
from tandem.errors import BundleError
from tandem.export.onnx_export import INPUT, warnings_to_debug_log
from tandem.export.timing import log_seconds
from tandem.export.variant_parity import ParityPhotos, keep

log = logging.getLogger(__name__)

FILES = {"fp32": "model.pte", "int8": "model.int8.pte"}
STEM_CONVOLUTIONS = 2  # int8 leaves these float, as LiteRT does (_float_nodes)


def _lower(program: torch.export.ExportedProgram) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)


def _quantized(model: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray) -> torch.nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph: Any = torch.export.export(model, (example,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    kept_float = _float_nodes(graph)
    quantizer.set_filter_function(lambda node: node.name not in kept_float)
    prepared: Any = prepare_pt2e(graph, quantizer)
    for i in range(len(calibration)):  # the program's batch is 1, as on a phone
        prepared(torch.from_numpy(calibration[i : i + 1]))
    return convert_pt2e(prepared)


def _float_nodes(graph: torch.fx.GraphModule) -> frozenset[str]:
    """The nodes int8 leaves float: the stem (the first two convolutions: the first and the first depthwise), as
    LiteRT's int8 does (litert_convert.FLOAT_CONVOLUTIONS), and the classifier (the last linear layer), whose logits
    decide the top class, as every format's int8 does. On bench/formats.py's 47-class model (top-1 agreement with
    PyTorch on its 369 test photos / 1,045 training photos not used for calibration): every layer int8 0.900 on
    the test photos; the first convolution and the classifier float 0.905 / 0.941; the classifier alone 0.897 /
    0.921; both linear layers and the first convolution 0.908 / 0.944 (+0.19 MB); the stem and the classifier
    0.949 / 0.958, above the int8 ONNX model's 0.946, at the same size. By node, with the quantizer's filter
    function: its set_module_name rules matched 1 of the 41 weighted layers of this program."""
    convs = [n.name for n in graph.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    linears = [n.name for n in graph.graph.nodes if n.target == torch.ops.aten.linear.default]
    return frozenset(convs[:STEM_CONVOLUTIONS] + linears[-1:])


def convert(model: torch.nn.Module, precision: str, height: int, width: int,
            calibration: np.ndarray | None = None) -> bytes:
    """``model`` (PixelModel) as an ExecuTorch program at batch 1, ``precision`` fp32 or int8 (calibrated on
    ``calibration``, N×H×W×3 uint8); BundleError with ExecuTorch's words when it cannot."""
    example = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    try:
        with warnings_to_debug_log(log), quiet_import(), torch.no_grad():
            if precision == "int8":
                assert calibration is not None
                model = _quantized(model, example, calibration)
            return _lower(torch.export.export(model, (example,)))
    except Exception as e:  # torch.export's and ExecuTorch's own error types; their words name the op
        raise BundleError(f"ExecuTorch could not convert the model to {precision}: {type(e).__name__}: "
                          f"{str(e)[:2000]}\nExport without it (--formats onnx) or, for int8, with fp32 only "
                          "(--formats onnx,executorch-fp32)") from e


def export_executorch(model: torch.nn.Module, stage: Path, keys: frozenset[str], spec: PreprocessSpec,
                      labels: list[str], outputs: list[TensorSpec], calibration: np.ndarray,
                      photos: ParityPhotos, asked: bool = True) -> dict[str, Variant]:
    """Write the ExecuTorch ``keys`` (``executorch-fp32``, ``executorch-int8``) of ``model`` (PixelModel) into
    ``stage``, each checked on ``photos`` before it is written; returns their manifest entries. A variant that
    fails its check stops the export when the user ``asked`` for it (--formats), else it is left out with a
    warning (export_litert says why)."""
    version = metadata.version("executorch")
    variants: dict[str, Variant] = {}
    for precision in (p for p in ("fp32", "int8") if f"executorch-{p}" in keys):
        key = f"executorch-{precision}"
        start = time.perf_counter()
        try:
            data = convert(model, precision, spec.height, spec.width, calibration)
        except BundleError as e:
            if asked:
                raise
            log.warning("%s: left out: %s", key, e)
            continue
        log_seconds(log, key, time.perf_counter() - start)
        variant = Variant(
            format="executorch", precision=precision, file=FILES[precision], layout="NHWC",
            inputs=[TensorSpec(name=INPUT, dtype="uint8", shape=[1, spec.height, spec.width, 3])],
            outputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=[1, *t.shape[1:]]) for t in outputs],
            runtime=Software(name="executorch", version=version),
            converter=Software(name="executorch", version=version),
            parity=Parity(images=1, on="test", max_abs=0.0),  # measured next
        )
        with tempfile.TemporaryDirectory(prefix="tandem-executorch-") as tmp:
            path = Path(tmp) / FILES[precision]
            path.write_bytes(data)
            got = ExecuTorchModel(path, variant, spec, labels, label=key).run(photos.pixels)
        kept = keep(key, variant, got, photos, asked, log)
        if kept is not None:
            (stage / FILES[precision]).write_bytes(data)  # the stage is renamed into place as a whole
            variants[key] = kept
    return variants
