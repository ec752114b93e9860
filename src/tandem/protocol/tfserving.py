"""TensorFlow Serving's REST predict, classify, status and metadata bodies, both ways, without HTTP.

Row format: ``{"instances": [...]}``, one entry per example (a value, or ``{input: value}``),
answered with ``{"predictions": [...]}`` (one value per example, or ``{output: value}`` when the
model has several outputs). Columnar format: ``{"inputs": value or {input: value}}`` with the batch
as the first dimension, answered with ``{"outputs": value or {output: value}}``.
https://www.tensorflow.org/tfx/serving/api_rest#predict_api

Classify (a model with a label per score): ``{"examples": [{input: value}, ...]}``, answered with
``{"result": [[[label, score], ...], ...]}``, every class of each example in the model's order.
Metadata: the model's ``serving_default`` signature (and ``classification`` for a classifier) as
TF-Serving writes a ``SignatureDef`` in JSON: TensorFlow dtypes, dimensions as strings (int64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tandem.errors import InvalidRequest, Unavailable, quoted
from tandem.protocol import jsonbody, tensors
from tandem.protocol.datatypes import TensorSig

SIGNATURE = "serving_default"
CLASSIFY_SIGNATURE = "classification"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
# OIP datatypes as TensorFlow names them.
TF_DTYPES = {"BOOL": "DT_BOOL", "UINT8": "DT_UINT8", "UINT16": "DT_UINT16", "UINT32": "DT_UINT32",
             "UINT64": "DT_UINT64", "INT8": "DT_INT8", "INT16": "DT_INT16", "INT32": "DT_INT32", "INT64": "DT_INT64",
             "FP16": "DT_HALF", "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "BYTES": "DT_STRING"}


def parse_predict(body: bytes, inputs: Sequence[TensorSig]) -> tuple[dict[str, np.ndarray], bool]:
    """(arrays by input name, whether the request used the row format)."""
    req = jsonbody.request(body, "predict request")
    if not isinstance(req, dict):
        raise InvalidRequest(f"predict request must be a JSON object, got {type(req).__name__}")
    signature = req.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise InvalidRequest(f"signature_name {quoted(signature)}: this model has only {SIGNATURE!r}")
    if ("instances" in req) == ("inputs" in req):
        raise InvalidRequest("send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    names = [s.name for s in inputs]
    if "instances" in req:
        return _rows(req["instances"], inputs, names), True
    return _columns(req["inputs"], inputs, names), False


def _rows(instances: Any, inputs: Sequence[TensorSig], names: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest("'instances' must be a non-empty list, one entry per example")
    named = isinstance(instances[0], dict)
    if any(isinstance(i, dict) != named for i in instances):
        raise InvalidRequest("'instances' mixes {input: value} objects and bare values; use one form")
    if not named:
        if len(inputs) != 1:
            raise InvalidRequest(f"the model takes several inputs ({', '.join(names)}): "
                                 "give each instance as {input: value}")
        return {names[0]: tensors.from_nested(inputs[0], instances, "instances")}
    for i, inst in enumerate(instances):
        _check_names(inst, names, f"instances[{i}]")
    return {s.name: tensors.from_nested(s, [inst[s.name] for inst in instances], "instances") for s in inputs}


def _columns(columns: Any, inputs: Sequence[TensorSig], names: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(columns, dict):
        if len(inputs) != 1:
            raise InvalidRequest(f"the model takes several inputs ({', '.join(names)}): "
                                 "give 'inputs' as {input: value}")
        return {names[0]: tensors.from_nested(inputs[0], columns, "'inputs' value")}
    _check_names(columns, names, "inputs")
    arrays = {s.name: tensors.from_nested(s, columns[s.name], "'inputs' value") for s in inputs}
    if len({a.shape[0] for a in arrays.values()}) > 1:
        raise InvalidRequest("the inputs have different batch sizes; the first dimension must agree")
    return arrays


def _check_names(obj: dict[str, Any], names: list[str], where: str) -> None:
    unknown = sorted(set(obj) - set(names))
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidRequest(f"{where}: {', '.join(map(quoted, unknown[:5]))}{more} is not an input of this model; "
                             f"it takes: {', '.join(names)}")
    missing = [n for n in names if n not in obj]
    if missing:
        raise InvalidRequest(f"{where}: missing input(s) {', '.join(missing)}")


def encode_predict(outputs: dict[str, np.ndarray], rows: bool) -> bytes:
    if not rows:
        value: Any = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return jsonbody.dumps({"outputs": value})
    if len(outputs) == 1:
        return jsonbody.dumps({"predictions": next(iter(outputs.values()))})
    n = len(next(iter(outputs.values())))
    return jsonbody.dumps({"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]})


def parse_classify(body: bytes, inputs: Sequence[TensorSig]) -> dict[str, np.ndarray]:
    """A classify request's examples as arrays by input name (one row per example)."""
    req = jsonbody.request(body, "classify request")
    if not isinstance(req, dict):
        raise InvalidRequest(f"classify request must be a JSON object, got {type(req).__name__}")
    signature = req.get("signature_name", SIGNATURE)
    if signature not in (SIGNATURE, CLASSIFY_SIGNATURE):
        raise InvalidRequest(f"signature_name {quoted(signature)}: this model has {SIGNATURE!r} and "
                             f"{CLASSIFY_SIGNATURE!r}")
    examples = req.get("examples")
    if not isinstance(examples, list) or not examples or not all(isinstance(e, dict) for e in examples):
        raise InvalidRequest("'examples' must be a non-empty list of {input: value} objects, one per example")
    context = req.get("context", {})
    if not isinstance(context, dict):
        raise InvalidRequest(f"'context' must be an {{input: value}} object, got {type(context).__name__}")
    names = [s.name for s in inputs]
    merged = [{**context, **e} for e in examples]  # the context's features are every example's
    for i, example in enumerate(merged):
        _check_names(example, names, f"examples[{i}]")
    return {s.name: tensors.from_nested(s, [e[s.name] for e in merged], "examples") for s in inputs}


def encode_classify(scores: np.ndarray, labels: Sequence[str]) -> bytes:
    """Every class of each row, ``[label, score]`` in the model's order."""
    return jsonbody.dumps({"result": [[[label, float(p)] for label, p in zip(labels, row, strict=True)]
                                      for row in scores]})


def _tensor_info(s: TensorSig) -> dict[str, Any]:
    return {"dtype": TF_DTYPES[s.datatype], "name": f"{s.name}:0",
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in s.shape], "unknown_rank": False}}


def _signature(inputs: Sequence[TensorSig], outputs: Sequence[TensorSig], method: str) -> dict[str, Any]:
    return {"inputs": {s.name: _tensor_info(s) for s in inputs}, "outputs": {s.name: _tensor_info(s) for s in outputs},
            "method_name": method}


def encode_metadata(name: str, version: int, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig],
                    classifies: TensorSig | None = None) -> dict[str, Any]:
    """A model metadata answer (``GET /v1/models/NAME[/versions/N]/metadata``): its signatures;
    ``classifies``: the scores output of a classifier, which gets a ``classification`` signature too."""
    signatures = {SIGNATURE: _signature(inputs, outputs, PREDICT_METHOD)}
    if classifies is not None:
        classes = TensorSig("classes", "BYTES", classifies.shape)
        signatures[CLASSIFY_SIGNATURE] = _signature(inputs, [classes, TensorSig("scores", "FP32", classifies.shape)],
                                                    CLASSIFY_METHOD)
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": {"signature_def": signatures}}}


def model_path(model: str, version: int | str | None = None) -> str:
    """``/v1/models/{model}[/versions/{n}|/labels/{alias}]``: a model's status; ``:predict`` follows it."""
    if version is None:
        return f"/v1/models/{model}"
    return f"/v1/models/{model}/versions/{version}" if str(version).isdigit() else f"/v1/models/{model}/labels/{version}"


def encode_status(versions: Sequence[int]) -> dict[str, Any]:
    """A model status answer: each of ``versions`` available."""
    return {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in versions]}


def served_version(status: Any) -> int | None:
    """The newest AVAILABLE version in a model status answer (a predict answer carries none)."""
    try:
        versions = [int(s["version"]) for s in status.get("model_version_status", []) if s.get("state") == "AVAILABLE"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return max(versions) if versions else None


# --- the client's side -------------------------------------------------------------------------


def encode_request(inputs: dict[str, np.ndarray]) -> bytes:
    """A columnar predict request: the only input's value, else ``{input: value}``."""
    if len(inputs) == 1:
        payload: Any = next(iter(inputs.values())).tolist()
    else:
        payload = {n: a.tolist() for n, a in inputs.items()}
    return jsonbody.dumps({"inputs": payload})


def decode_answer(raw: bytes, where: str, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A columnar answer's outputs (a lone unnamed output takes the first name of ``outputs``, else
    "output"), only those named in ``outputs`` when given; Unavailable when it is not one."""
    body = jsonbody.answer(raw, where)
    if not isinstance(body, dict) or "outputs" not in body:
        raise Unavailable(f"{where}: the answer has no 'outputs'; is this a TF-Serving endpoint?")
    value = body["outputs"]
    try:
        named = value if isinstance(value, dict) else {(outputs[0] if outputs else "output"): value}
        out = {n: np.asarray(v, dtype=np.float32 if _is_float(v) else None) for n, v in named.items()}
    except (TypeError, ValueError) as e:
        raise Unavailable(f"{where}: malformed outputs in the answer ({e})") from e
    if outputs is not None:
        out = {n: out[n] for n in outputs if n in out}
    return out


def _is_float(v: Any) -> bool:
    while isinstance(v, list) and v:
        v = v[0]
    return isinstance(v, float)
