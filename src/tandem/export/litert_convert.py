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
import sys
import time
from importlib import metadata
from pathlib import Path


def _named(program_module, output_names: list[str]):
    """The program's module with a keyword input and named outputs: LiteRT's signature then reads
    ``pixels`` → ``probabilities``, ``embedding`` instead of args_0 → output_0, output_1."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            return dict(zip(output_names, self.inner(pixels), strict=True))

    named = Named(program_module)
    # The exported graph is already in inference form (batch norm folded into its running statistics), and
    # torch.export's modules refuse .eval(); the converter only reads the flag.
    for m in named.modules():
        m.training = False
    return named


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
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        start = time.perf_counter()
        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
        prepared = prepare_pt2e(torch.export.export(model, (), example).module(), quantizer)
        pixels = np.load(request["calibration"])
        with torch.no_grad():
            for i in range(len(pixels)):  # the program's batch is 1, as on a phone
                prepared(**{request["input"]: torch.from_numpy(pixels[i : i + 1])})
        quantized = convert_pt2e(prepared, fold_quantize=False)
        litert_torch.convert(quantized, sample_kwargs=example,
                             quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(request["int8"])
        seconds["int8"] = time.perf_counter() - start

    return {
        "converter": {"name": "litert-torch", "version": metadata.version("litert-torch")},
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
