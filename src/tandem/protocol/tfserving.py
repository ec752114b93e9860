"""TensorFlow Serving's REST predict and status bodies, both ways, without HTTP.

Row format: ``{"instances": [...]}``, one entry per example (a value, or ``{input: value}``),
answered with ``{"predictions": [...]}`` (one value per example, or ``{output: value}`` when the
model has several outputs). Columnar format: ``{"inputs": value or {input: value}}`` with the batch
as the first dimension, answered with ``{"outputs": value or {output: value}}``.
https://www.tensorflow.org/tfx/serving/api_rest#predict_api
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tandem.errors import InvalidRequest, Unavailable, quoted
from tandem.protocol import jsonbody, tensors
from tandem.protocol.datatypes import TensorSig

SIGNATURE = "serving_default"


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
