"""Open Inference Protocol v2 (KServe v2) inference requests and responses, without HTTP.

Covers JSON tensors and the binary tensor data extension: the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of every input that declares
``parameters.binary_data_size``, in the order of ``inputs``. Outputs come back as JSON ``data`` or
as raw bytes after the JSON header, per output (``parameters.binary_data``) or for all of them
(request ``parameters.binary_data_output``).

int8 transfer (a split's tail, docs/serving.md): an FP32 input named in ``int8_inputs`` may instead
arrive as UINT8 with ``parameters.scale`` and ``parameters.zero_point`` on the input (or on the
request, for clients such as tritonclient that cannot set an input's parameters); it is decoded to
``(q - zero_point) * scale`` in float32, as tandem.export.activations encodes it. Spec:
https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
and Triton's binary_tensor_data extension.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from tandem.errors import InvalidRequest, quoted
from tandem.export import activations
from tandem.server import tensors
from tandem.server.tensors import TensorSig

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    id: str | None = None

    @property
    def rows(self) -> int:
        return next(iter(self.inputs.values())).shape[0]


def loads(raw: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(
            f"{what} is not valid JSON ({e}); NaN and Infinity are not JSON numbers either"
        ) from e


def _parameters(obj: dict, where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequest(f"{where}: parameters must be a JSON object, got {type(params).__name__}")
    return params


def _flag(params: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where}: parameters.{key} must be true or false, got {quoted(value)}")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, int]:
    """(the JSON header, where the binary part starts) from the body and the header's value."""
    view = memoryview(body)
    if header_length is None:
        return view, len(body)
    try:
        n = int(header_length.strip())
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH}: {quoted(header_length)} is not a byte count") from None
    if n < 0 or n > len(body):
        raise InvalidRequest(
            f"{HEADER_LENGTH}: {n} bytes of JSON header, but the request body holds {len(body)} bytes"
        )
    return view[:n], n


def _quantization(params: dict[str, Any], request_params: dict[str, Any], name: str) -> tuple[float, int]:
    """(scale, zero point) of an int8-encoded input: its own parameters, else the request's."""
    source = params if "scale" in params or "zero_point" in params else request_params
    scale, zero_point = source.get("scale"), source.get("zero_point")
    if type(scale) not in (int, float) or not np.isfinite(scale) or not scale > 0:
        raise InvalidRequest(f"input '{name}': UINT8 values of an FP32 input need parameters.scale, a positive "
                             f"number (int8 transfer: x = (q - zero_point) * scale), got {quoted(scale)}")
    if type(zero_point) is not int or not 0 <= zero_point <= 255:
        raise InvalidRequest(f"input '{name}': UINT8 values of an FP32 input need parameters.zero_point, an "
                             f"integer from 0 to 255, got {quoted(zero_point)}")
    return float(scale), zero_point


def parse_infer_request(
    body: bytes, header_length: str | None, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig],
    int8_inputs: Collection[str] = (),
) -> InferRequest:
    """Check a request against the model's inputs and outputs and give numpy arrays (binary ones
    are read-only views into ``body``, not copies). ``int8_inputs``: FP32 inputs that may arrive
    int8-encoded (see the module's docstring)."""
    header, binary_start = split_body(body, header_length)
    req = loads(header, "inference request")
    if not isinstance(req, dict):
        raise InvalidRequest(f"inference request must be a JSON object, got {type(req).__name__}")
    request_id = req.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"id must be a string, got {quoted(request_id)}")
    params = _parameters(req, "request")
    binary_default = _flag(params, "binary_data_output", "request")

    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("inputs must be a non-empty list of tensors, each with name, shape, datatype and data")
    sigs = {s.name: s for s in inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = binary_start
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidRequest(f"inputs[{i}] must be a JSON object, got {type(item).__name__}")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidRequest(f"inputs[{i}]: name must be a string, got {quoted(name)}")
        sig = sigs.get(name)
        if sig is None:
            raise InvalidRequest(
                f"input {quoted(name)} is not an input of this model; it takes: {', '.join(sorted(sigs))}"
            )
        if name in arrays:
            raise InvalidRequest(f"input '{name}' is given twice")
        item_params = _parameters(item, f"input '{name}'")
        quantized: tuple[float, int] | None = None
        if name in int8_inputs and sig.datatype == "FP32" and item.get("datatype") == "UINT8":
            quantized = _quantization(item_params, params, name)
            sig = TensorSig(sig.name, "UINT8", sig.shape)
        tensors.check_datatype(sig, item.get("datatype"))
        shape = tensors.check_shape(sig, item.get("shape"))
        size = item_params.get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise InvalidRequest(f"input '{name}' has neither data nor parameters.binary_data_size")
            arrays[name] = _decoded(tensors.from_json_values(sig, item["data"], shape), quantized)
            continue
        if type(size) is not int or size < 0:
            raise InvalidRequest(f"input '{name}': binary_data_size must be a byte count, got {quoted(size)}")
        if "data" in item:
            raise InvalidRequest(f"input '{name}' has both data and binary_data_size; send one of them")
        if header_length is None:
            raise InvalidRequest(
                f"input '{name}' declares binary_data_size but the request has no {HEADER_LENGTH} header"
            )
        if offset + size > len(body):
            raise InvalidRequest(
                f"input '{name}': binary_data_size {size} reaches past the end of the body "
                f"({len(body) - offset} bytes left after the JSON header and earlier inputs)"
            )
        arrays[name] = _decoded(tensors.from_bytes(sig, body, offset, size, shape), quantized)
        offset += size
    if offset != len(body):
        raise InvalidRequest(
            f"the body holds {len(body) - binary_start} bytes after the {binary_start}-byte JSON header, but the "
            f"inputs' binary_data_size add up to {offset - binary_start}; check {HEADER_LENGTH}"
        )
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        raise InvalidRequest(f"missing input(s): {', '.join(missing)}; the model takes "
                             + "; ".join(s.describe() for s in inputs))
    rows = {a.shape[0] for a in arrays.values()}
    if len(rows) > 1:
        raise InvalidRequest(f"inputs have different batch sizes {sorted(rows)}; the first dimension must agree")
    return InferRequest(arrays, _requested_outputs(req.get("outputs"), outputs, binary_default), request_id)


def _decoded(arr: np.ndarray, quantized: tuple[float, int] | None) -> np.ndarray:
    if quantized is None:
        return arr
    scale, zero_point = quantized
    return activations.dequantize(activations.Quantized(arr, scale, zero_point))


def _requested_outputs(raw: Any, outputs: Sequence[TensorSig], binary_default: bool) -> list[RequestedOutput]:
    names = [s.name for s in outputs]
    if raw is None:
        return [RequestedOutput(n, binary_default) for n in names]
    if not isinstance(raw, list):
        raise InvalidRequest(f"outputs must be a list of {{\"name\": ...}} objects, got {type(raw).__name__}")
    picked: list[RequestedOutput] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(f"outputs[{i}] must be an object with a string name")
        name = item["name"]
        if name not in names:
            raise InvalidRequest(f"output {quoted(name)} is not an output of this model; it gives: {', '.join(names)}")
        if any(p.name == name for p in picked):
            raise InvalidRequest(f"output '{name}' is requested twice")
        params = _parameters(item, f"output '{name}'")
        if "classification" in params:
            raise InvalidRequest(f"output '{name}': the classification extension is not supported; "
                                 "request the probabilities and take the top-k yourself")
        picked.append(RequestedOutput(name, _flag(params, "binary_data", f"output '{name}'", binary_default)))
    return picked


def datatype_of(arr: np.ndarray) -> str:
    for name, dtype in tensors.DATATYPES.items():
        if dtype == arr.dtype:
            return name
    raise InvalidRequest(f"output of dtype {arr.dtype} has no Open Inference Protocol datatype")


def encode_infer_response(
    model_name: str, model_version: int | str, request_id: str | None,
    outputs: Sequence[tuple[RequestedOutput, np.ndarray]],
) -> tuple[bytes, dict[str, str]]:
    """(body, headers): JSON alone, or a JSON header plus raw bytes when any output is binary."""
    blobs: list[bytes] = []
    tensors_out = []
    for req, arr in outputs:
        t: dict[str, Any] = {"name": req.name, "datatype": datatype_of(arr), "shape": list(arr.shape)}
        if req.binary:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            t["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            t["data"] = np.ascontiguousarray(arr).reshape(-1)
        tensors_out.append(t)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request_id is not None:
        resp["id"] = request_id
    resp["outputs"] = tensors_out
    header = orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"content-type": JSON_TYPE}
    return b"".join([header, *blobs]), {"content-type": BINARY_TYPE, HEADER_LENGTH.lower(): str(len(header))}
