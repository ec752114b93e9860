"""torch.export program → LiteRT (.tflite) fp32 and static int8: run *inside the LiteRT converter's venv*.

litert-torch cannot share Tandem's venv (it pins typing-extensions<4.13 through xdsl, below what Tandem's
pydantic needs), so `make install` gives it one of its own with the same torch (.venv-litert), and
``tandem.export.litert_export`` runs this file there by its path. It imports nothing of Tandem: what it
converts is a torch.export program saved by Tandem's venv (the checkpoint's network with its uint8 input,
cast and normalisation), so both venvs agree on the model by construction.

Usage: python litert_convert.py REQUEST.json — REQUEST names the program, the input and output names, the
files to write and, for int8, an .npy of calibration pixels (N×H×W×3 uint8). It writes REPORT (a JSON
file the request names) with the versions and seconds; on failure it exits 1 with the converter's words.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

# The signature litert-torch writes, which the variant's manifest entry names.
SIGNATURE = "serving_default"


def _named(program_module, output_names: list[str]):
    """The program's module with a keyword input and named outputs: LiteRT's signature then reads
    ``pixels`` → ``probabilities``, ``embedding`` instead of args_0 → output_0, output_1."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.inner(pixels)  # a tuple (a classifier's), or one tensor (a face embedding's)
            return dict(zip(output_names, (out,) if isinstance(out, torch.Tensor) else out, strict=True))

    named = Named(program_module)
    # The exported graph is already in inference form (batch norm folded into its running statistics), and
    # torch.export's modules refuse .eval(); the converter only reads the flag.
    for m in named.modules():
        m.training = False
    return named


def quantize_int8(fp32: str, out: str, pixels, input_name: str) -> None:
    """The fp32 .tflite at ``fp32`` → static int8 at ``out`` by Google's ai-edge-quantizer: its ``static_wi8_ai8``
    recipe (weights int8, symmetric, per channel; activations int8, per tensor), each activation's range the
    smallest and largest value seen running the fp32 file on ``pixels`` (N×H×W×3 uint8, one photo a call: the
    file's batch is 1), as ONNX Runtime's MinMax calibration takes them for ``model.int8.onnx``.

    Three changes to the recipe as it comes, measured on bench/formats.py's 47-class model (369 test
    photos, top-1 agreement with PyTorch): its calibration keeps a moving average of each photo's range (a new photo
    weighs 0.05), which clips what few photos reach: 68%; the range over all photos: 94% (the int8 ONNX model: 88%).
    Its outputs come out int8 (the bundle's are float32: now a dequantize ends each), and so does its softmax
    (probabilities in steps of 1/256, which ties near classes): both stay float. The uint8 input and its cast stay
    as they are (a quantize follows the cast). litert-torch's own int8 path (PT2E) is not used: its lowering of the
    quantised graph picked PyTorch's class on 5-12% of the same photos (docs/bundle.md)."""
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    qt = quantizer.Quantizer(fp32, recipe.static_wi8_ai8())
    for op in (recipe.TFLOperationName.OUTPUT, recipe.TFLOperationName.SOFTMAX):
        qt.update_quantization_recipe(".*", op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    rules = recipe_manager.RecipeManager()
    rules.load_quantization_recipe(qt.get_quantization_recipe())
    # Quantizer.calibrate takes no update rule; its Calibrator does (min_max_update: the range over all photos).
    calib = calibrator.Calibrator(fp32, num_threads=os.cpu_count() or 1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({SIGNATURE: [{input_name: pixels[i : i + 1]} for i in range(len(pixels))]}, rules)
    qt.quantize(calib.get_model_qsvs(), enable_progress_report=False).export_model(out, overwrite=True)


def convert(request: dict) -> dict:
    import litert_torch
    import numpy as np
    import torch

    program = torch.export.load(request["program"])
    model = _named(program.module(), request["outputs"])
    example = {request["input"]: torch.zeros(request["example_shape"], dtype=torch.uint8)}
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    litert_torch.convert(model, sample_kwargs=example).export(request["fp32"])
    seconds["fp32"] = time.perf_counter() - start

    if request.get("int8"):
        start = time.perf_counter()
        quantize_int8(request["fp32"], request["int8"], np.load(request["calibration"]), request["input"])
        seconds["int8"] = time.perf_counter() - start

    return {
        "converter": {"name": "litert-torch", "version": metadata.version("litert-torch")},
        "quantizer": {"name": "ai-edge-quantizer", "version": metadata.version("ai-edge-quantizer")},
        "runtime": {"name": "ai-edge-litert", "version": metadata.version("ai-edge-litert")},
        "torch": torch.__version__,
        "seconds": seconds,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python litert_convert.py REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[1]).read_text("utf-8"))
    try:
        report = convert(request)
    except Exception as e:  # the converter's own error types; its words are what the user needs
        print(f"LiteRT conversion failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    Path(request["report"]).write_text(json.dumps(report), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
