"""Open Inference Protocol v2 (KServe v2) inference requests and responses, both ways, without HTTP.

The server parses a request (:func:`parse_infer_request`) and writes its answer
(:func:`encode_infer_response`); a client (the device SDK) writes a request
(:func:`encode_infer_request`) and reads the answer (:func:`decode_infer_response`). A client's
malformed request is an InvalidRequest (400); a server's malformed answer is Unavailable.

Covers JSON tensors and the binary tensor data extension: the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of every input that declares
``parameters.binary_data_size``, in the order of ``inputs``. Outputs come back as JSON ``data`` or
as raw bytes after the JSON header, per output (``parameters.binary_data``) or for all of them
(request ``parameters.binary_data_output``).

int8 transfer (a split's tail, docs/serving.md): an FP32 input named in ``int8_inputs`` may instead
arrive as UINT8 with ``parameters.scale`` and ``parameters.zero_point`` on the input (or on the
request, for clients such as tritonclient that cannot set an input's parameters); it is decoded to
``(q - zero_point) * scale`` in float32, as tandem.protocol.activations encodes it. Spec:
https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
and Triton's binary_tensor_data extension.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tandem.errors import InvalidRequest, Unavailable, quoted
from tandem.protocol import activations, classification, jsonbody, numeric_json, tensors
from tandem.protocol.datatypes import DATATYPES, TensorSig, datatype_of

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int | None = None  # the top K classes as BYTES strings (see protocol/classification.py)


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    id: str | None = None

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
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
    scale: Any = source.get("scale")  # JSON: checked below
    zero_point: Any = source.get("zero_point")
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
    req = numeric_json.parse_request(header)
    if req is None:
        req = jsonbody.request(header, "inference request")
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
    sigs = {s.name: s for s in outputs}
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
        k = (classification.check_count(params[classification.PARAMETER], name, sigs[name].shape)
             if classification.PARAMETER in params else None)
        picked.append(RequestedOutput(name, _flag(params, "binary_data", f"output '{name}'", binary_default), k))
    return picked


def encode_infer_response(
    model_name: str, model_version: int | str, request_id: str | None,
    outputs: Sequence[tuple[RequestedOutput, np.ndarray]],
) -> tuple[bytes, dict[str, str]]:
    """(body, headers): JSON alone, or a JSON header plus raw bytes when any output is binary."""
    blobs: list[bytes] = []
    tensors_out = []
    for req, arr in outputs:
        strings = arr.dtype == object  # BYTES: the classification extension's strings
        t: dict[str, Any] = {"name": req.name,
                             "datatype": "BYTES" if strings else datatype_of(arr, f"output '{req.name}'"),
                             "shape": list(arr.shape)}
        if req.binary:
            raw = (_bytes_tensor(arr) if strings
                   else np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())
            t["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif strings:
            t["data"] = [b.decode() for b in arr.reshape(-1)]
        else:
            t["data"] = np.ascontiguousarray(arr).reshape(-1)
        tensors_out.append(t)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request_id is not None:
        resp["id"] = request_id
    resp["outputs"] = tensors_out
    header = jsonbody.dumps(resp)
    if not blobs:
        return header, {"content-type": JSON_TYPE}
    return b"".join([header, *blobs]), {"content-type": BINARY_TYPE, HEADER_LENGTH.lower(): str(len(header))}


def _bytes_tensor(arr: np.ndarray) -> bytes:
    """A BYTES tensor in binary tensor data: each element's length (4 bytes, little-endian), then its bytes."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in arr.reshape(-1))


def model_path(model: str, version: int | str | None = None) -> str:
    """``/v2/models/{model}[/versions/{version}]``: a model's metadata; ``/infer`` and ``/ready`` follow it."""
    return f"/v2/models/{model}" if version is None else f"/v2/models/{model}/versions/{version}"


def tensor_metadata(sigs: Sequence[TensorSig]) -> list[dict[str, Any]]:
    """Tensors as a model metadata answer lists them."""
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in sigs]


def model_config(name: str, platform: str, max_batch_size: int, inputs: Sequence[TensorSig],
                 outputs: Sequence[TensorSig], max_queue_delay_us: int) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/NAME/config``, model_config.proto as JSON): with a
    ``max_batch_size``, ``dims`` leave out the batch dimension, and ``-1`` is any size; numbers are
    numbers, as Triton writes them (its int64 fields are not protobuf's JSON strings)."""
    def tensor(s: TensorSig) -> dict[str, Any]:
        return {"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": list(s.shape[1:])}

    return {"name": name, "platform": platform, "backend": platform.partition("_")[0],
            "max_batch_size": max_batch_size,
            "input": [tensor(s) for s in inputs], "output": [tensor(s) for s in outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us}}


# --- the client's side -------------------------------------------------------------------------


def encode_infer_request(
    inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None, *, binary: bool = True,
    input_parameters: dict[str, dict[str, Any]] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a request for ``inputs`` (name → array, batch first) and ``outputs`` (all
    when None): binary tensor data when ``binary``, else JSON tensors. ``input_parameters``: OIP
    parameters per input (an int8-encoded tensor's ``scale`` and ``zero_point``)."""
    arrays = {n: np.ascontiguousarray(a) for n, a in inputs.items()}
    params = input_parameters or {}
    items: list[dict[str, Any]] = []
    for name, arr in arrays.items():
        t: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype_of(arr, f"input '{name}'")}
        if name in params:
            t["parameters"] = dict(params[name])
        if binary:
            t["parameters"] = {**t.get("parameters", {}), "binary_data_size": arr.nbytes}
        else:
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InvalidRequest(f"input '{name}' holds NaN or infinity, which JSON cannot carry")
            t["data"] = arr.reshape(-1).tolist()
        items.append(t)
    req: dict[str, Any] = {"inputs": items}
    if outputs is not None:
        req["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    elif binary:
        req["parameters"] = {"binary_data_output": True}
    header = jsonbody.dumps(req)
    if not binary:
        return header, {"Content-Type": JSON_TYPE}
    body = b"".join([header, *(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in arrays.values())])
    return body, {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


@dataclass
class InferResponse:
    outputs: dict[str, np.ndarray]
    model_name: str | None
    model_version: int | None  # None: not a version number (or not said)


def decode_infer_response(raw: bytes, header_length: str | None, where: str) -> InferResponse:
    """An answer's outputs (JSON ``data`` or binary tensor data after the JSON header of
    ``header_length`` bytes); Unavailable, naming ``where``, when it is not an OIP v2 answer."""
    try:
        split = int(header_length) if header_length is not None else len(raw)
    except ValueError:
        raise Unavailable(f"{where}: bad {HEADER_LENGTH} {header_length!r} in the answer") from None
    if not 0 <= split <= len(raw):
        raise Unavailable(f"{where}: {HEADER_LENGTH} {split} is past the end of a {len(raw)}-byte answer")
    body = jsonbody.answer(raw[:split], where)
    if not isinstance(body, dict) or not isinstance(body.get("outputs"), list):
        raise Unavailable(f"{where}: the answer has no 'outputs' list; is this an OIP v2 endpoint?")
    out: dict[str, np.ndarray] = {}
    offset = split
    try:
        for t in body["outputs"]:
            dtype = DATATYPES[t["datatype"]]
            shape = [int(d) for d in t["shape"]]
            size = (t.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                if offset + int(size) > len(raw):
                    raise ValueError(f"output {t['name']} reaches past the end of the answer")
                arr = np.frombuffer(raw, dtype.newbyteorder("<"), count=int(size) // dtype.itemsize,
                                    offset=offset).astype(dtype)
                offset += int(size)
            else:
                arr = np.asarray(t["data"], dtype=dtype)
            out[t["name"]] = arr.reshape(shape)
    except (KeyError, TypeError, ValueError) as e:
        raise Unavailable(f"{where}: malformed output tensor in the answer ({type(e).__name__}: {e})") from e
    name: Any = body.get("model_name")
    version: Any = body.get("model_version")
    return InferResponse(out, str(name) if name else None, int(version) if str(version).isdigit() else None)
