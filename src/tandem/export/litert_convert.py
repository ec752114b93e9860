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

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

# The signature litert-torch writes, which the variant's manifest entry names.
SIGNATURE = "serving_default"
# What quantize_int8 makes, for the variant's manifest entry (tandem.bundle.Quantization, with the operations
# the written file computes in float and, from the exporter, the calibration photos).
INT8_RECIPE = {"recipe": "static_wi8_ai8", "weights": "int8", "activations": "int8", "ranges": "min-max"}
# The operations up to the network's second convolution stay float (normalisation, stem, first depthwise): see
# quantize_int8. Convolutions by TFLite's names.
FLOAT_CONVOLUTIONS = 2
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


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


class _SharedVectors:
    """A flatbuffers Builder that writes each distinct numeric vector once: a second request for the same
    values gets the first one's offset (FlatBuffers lets any number of tables point at one vector, as the
    builder's own shared strings do). Everything else goes to the builder as it is."""

    def __init__(self, builder, written: dict) -> None:
        self._builder, self._written = builder, written

    def CreateNumpyVector(self, x):  # the flatbuffers Builder's name
        key = (x.dtype.str, x.tobytes())
        if key not in self._written:
            self._written[key] = self._builder.CreateNumpyVector(x)
        return self._written[key]

    def __getattr__(self, name: str):
        return getattr(self._builder, name)


@contextlib.contextmanager
def shared_quantization_vectors() -> Iterator[None]:
    """While it lasts, a .tflite written through LiteRT's flatbuffer objects (ai-edge-quantizer's writer) holds
    each distinct quantisation vector once. Why: TFLite's schema gives every per-channel tensor one int64 zero
    point per channel beside its float32 scale, and ai-edge-quantizer's int8 weights and their int32 biases are
    per channel, so the file carried 16 bytes of zeros for each output channel of every layer (130 KB, 0.038× of
    the fp32 file, on bench/formats.py's 47-class MobileNet). Shared, they are one vector per channel count: the
    same model and values (outputs bit-identical; TFLite's verifier and its GPU-compatibility check take it),
    0.290× of the fp32 file instead of 0.322× (docs/bundle.md). The scales stay one vector per tensor: they differ.
    Patched on the schema's class for the duration only; should a later quantiser write otherwise, the file is
    merely as large as before."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    cls = flatbuffer_utils.schema_fb.QuantizationParametersT
    pack = cls.Pack
    written: dict[int, tuple[object, dict]] = {}  # per builder (one a file): its vectors by value
    dtypes = {"min": np.float32, "max": np.float32, "scale": np.float32, "zeroPoint": np.int64}

    def shared_pack(self, builder):
        mine = written.get(id(builder))
        if mine is None or mine[0] is not builder:  # holding the builder keeps its id from being reused
            mine = written[id(builder)] = (builder, {})
        for field, dtype in dtypes.items():  # arrays, so Pack writes them with CreateNumpyVector
            if getattr(self, field) is not None:
                setattr(self, field, np.asarray(getattr(self, field), dtype).ravel())
        return pack(self, _SharedVectors(builder, mine[1]))

    cls.Pack = shared_pack
    try:
        yield
    finally:
        cls.Pack = pack


def _op_names() -> dict[int, str]:
    """TFLite's builtin operator codes → their names (CONV_2D …)."""
    from ai_edge_litert.tools import flatbuffer_utils

    return {v: k for k, v in vars(flatbuffer_utils.schema_fb.BuiltinOperator).items() if not k.startswith("_")}


def _op_name(model, op, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def float_ops(path: str) -> dict[str, int]:
    """The operations of the .tflite at ``path`` that compute in float32 (write a float32 tensor), counted by
    TFLite's names, but the dequantize ending each output: what int8 leaves in float."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    names = _op_names()
    found: dict[str, int] = {}
    for graph in model.subgraphs:
        for op in graph.operators:
            name = _op_name(model, op, names)
            if name != "DEQUANTIZE" and any(graph.tensors[t].type == flatbuffer_utils.schema_fb.TensorType.FLOAT32
                                            for t in op.outputs):
                found[name] = found.get(name, 0) + 1
    return dict(sorted(found.items()))


def stem_scopes(fp32: str, convolutions: int = FLOAT_CONVOLUTIONS) -> list[str]:
    """Regular expressions that name, as ai-edge-quantizer's recipes do (an operation's output tensors), each
    operation of the .tflite at ``fp32`` up to and including its ``convolutions``-th convolution; none when it
    has fewer."""
    import re

    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = flatbuffer_utils.read_model(fp32)
    names, graph = _op_names(), model.subgraphs[0]
    scopes: list[str] = []
    seen = 0
    for op in graph.operators:
        scopes.append("^" + re.escape(tfl_flatbuffer_utils.get_op_scope(op, graph.tensors)) + "$")
        seen += _op_name(model, op, names) in CONVOLUTIONS
        if seen == convolutions:
            return scopes
    return []


def classifier_scopes(fp32: str) -> list[str]:
    """The regular expression naming (as stem_scopes does) the last FULLY_CONNECTED operation of the .tflite at
    ``fp32``, the classifier, whose logits decide the top class; none when it has none."""
    import re

    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = flatbuffer_utils.read_model(fp32)
    names, graph = _op_names(), model.subgraphs[0]
    connected = [op for op in graph.operators if _op_name(model, op, names) == "FULLY_CONNECTED"]
    return ["^" + re.escape(tfl_flatbuffer_utils.get_op_scope(connected[-1], graph.tensors)) + "$"] if connected else []


def quantize_int8(fp32: str, out: str, pixels, input_name: str) -> dict:
    """The fp32 .tflite at ``fp32`` → static int8 at ``out`` by Google's ai-edge-quantizer: its ``static_wi8_ai8``
    recipe (weights int8, symmetric, per channel; activations int8, per tensor), each activation's range the
    smallest and largest value seen running the fp32 file on ``pixels`` (N×H×W×3 uint8, one photo a call: the
    file's batch is 1), as ONNX Runtime's MinMax calibration takes them for ``model.int8.onnx``. Returns what it
    made, for the manifest (INT8_RECIPE and the file's float operations).

    Four changes to the recipe as it comes, measured on bench/formats.py's 47-class model (369 test photos, top-1
    agreement with PyTorch): its calibration keeps a moving average of each photo's range (a new photo weighs 0.05),
    which clips what few photos reach: 68%; the range over all photos: 94% (the int8 ONNX model: 88%). Its outputs
    come out int8 (the bundle's are float32: now a dequantize ends each), and so does its softmax (probabilities in
    steps of 1/256, which ties near classes): both stay float. The uint8 input and its cast stay as they are. And
    the stem stays float: the normalisation, the first convolution and the first depthwise one (stem_scopes). Of
    every layer's weights made int8 alone, the first convolution's flipped the most photos (8 of 369); keeping up to
    the first depthwise float did better than one layer fewer or more (on 3 of the 4 figures next). On two runs of
    that bench (5 and 20 epochs) it took agreement from 93.2% and 95.9% to 94.6% and 97.8% (on all 1,670 photos of
    the runs: 92.6% → 94.6% and 97.1% → 98.7%, above the int8 ONNX model's 94.3% and 97.8%), at the same batch-1
    latency and 0.0006× more size (docs/bundle.md). litert-torch's own int8 path (PT2E) is not used: its lowering of
    the quantised graph picked PyTorch's class on 5-12% of the same photos. The file is written with its
    quantisation vectors shared (shared_quantization_vectors: 0.29× the fp32 file, not 0.32×). A fifth change: the
    classifier (classifier_scopes) stays float too, as in the int8 ONNX model, for its logits decide the top class:
    on 1,045 held-out training photos of bench/formats.py's 47-class run agreement went from 95.2% to 96.3% (test
    photos: 94.6% both), at 17 KB more (0.295× the fp32 file).

    Not taken (docs/bundle.md, "LiteRT"): int16 activations (``static_wi8_ai16``) agree about as often as
    weight-only int8 but run 60-70× slower (90-108 ms a photo against 1.5: LiteRT's CPU delegate, XNNPACK, has no
    16×8 kernels); the head kept float costs 0.06× of size. On these barely trained models the int8 weights set the
    limit below 99%: with every activation float (weight-only int8) 96.5% and 98.6%; fp16 weights 99.7%."""
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    qt = quantizer.Quantizer(fp32, recipe.static_wi8_ai8())
    for op in (recipe.TFLOperationName.OUTPUT, recipe.TFLOperationName.SOFTMAX):
        qt.update_quantization_recipe(".*", op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    for scope in stem_scopes(fp32) + classifier_scopes(fp32):  # a later, narrower rule wins over ".*"
        qt.update_quantization_recipe(scope, recipe.TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    rules = recipe_manager.RecipeManager()
    rules.load_quantization_recipe(qt.get_quantization_recipe())
    # Quantizer.calibrate takes no update rule; its Calibrator does (min_max_update: the range over all photos).
    calib = calibrator.Calibrator(fp32, num_threads=os.cpu_count() or 1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({SIGNATURE: [{input_name: pixels[i : i + 1]} for i in range(len(pixels))]}, rules)
    with shared_quantization_vectors():
        qt.quantize(calib.get_model_qsvs(), enable_progress_report=False).export_model(out, overwrite=True)
    return {**INT8_RECIPE, "float_ops": float_ops(out)}


def convert(request: dict) -> dict:
    import litert_torch
    import numpy as np
    import torch

    program = torch.export.load(request["program"])
    model = _named(program.module(), request["outputs"])
    example = {request["input"]: torch.zeros(request["example_shape"], dtype=torch.uint8)}
    seconds: dict[str, float] = {}
    quantization = None

    start = time.perf_counter()
    litert_torch.convert(model, sample_kwargs=example).export(request["fp32"])
    seconds["fp32"] = time.perf_counter() - start

    if request.get("int8"):
        start = time.perf_counter()
        quantization = quantize_int8(request["fp32"], request["int8"], np.load(request["calibration"]),
                                     request["input"])
        seconds["int8"] = time.perf_counter() - start

    return {
        "quantization": quantization,
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
