"""The OIP v2 codec alone: parsing against a model signature, and writing JSON and binary answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tandem.errors import InvalidRequest
from tandem.protocol.datatypes import TensorSig
from tandem.protocol.oip import RequestedOutput, encode_infer_response, parse_infer_request

PIXELS = TensorSig("pixels", "UINT8", (-1, 2, 2, 3))
SCALE = TensorSig("scale", "FP32", (-1, 1))
OUTS = [TensorSig("probabilities", "FP32", (-1, 3)), TensorSig("embedding", "FP32", (-1, 4))]


def body(header: dict, *blobs: bytes) -> tuple[bytes, str | None]:
    raw = json.dumps(header).encode()
    return raw + b"".join(blobs), (str(len(raw)) if blobs else None)


def tensor(name="pixels", datatype="UINT8", shape=(1, 2, 2, 3), **kw) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), **kw}


def parse(header: dict, *blobs: bytes, inputs=(PIXELS,)):
    raw, length = body(header, *blobs)
    return parse_infer_request(raw, length, list(inputs), OUTS)


def test_json_tensors_flat_or_nested_and_all_outputs_by_default():
    a = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    flat = parse({"inputs": [tensor(data=a.reshape(-1).tolist())], "id": "x"})
    nested = parse({"inputs": [tensor(data=a.tolist())]})
    assert flat.id == "x" and nested.id is None
    for req in (flat, nested):
        assert req.inputs["pixels"].dtype == np.uint8 and np.array_equal(req.inputs["pixels"], a)
        assert req.outputs == [RequestedOutput("probabilities", False), RequestedOutput("embedding", False)]


def test_binary_tensors_are_views_of_the_body_in_input_order():
    a = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    s = np.array([[1.5], [-2.0]], np.float32)
    req = parse({"inputs": [tensor(shape=a.shape, parameters={"binary_data_size": a.nbytes}),
                            tensor("scale", "FP32", (2, 1), parameters={"binary_data_size": s.nbytes})],
                 "parameters": {"binary_data_output": True}},
                a.tobytes(), s.tobytes(), inputs=(PIXELS, SCALE))
    assert np.array_equal(req.inputs["pixels"], a) and np.array_equal(req.inputs["scale"], s)
    assert not req.inputs["pixels"].flags.writeable  # no copy was made
    assert all(o.binary for o in req.outputs) and req.rows == 2


def test_requested_outputs_and_per_output_binary_flag():
    req = parse({"inputs": [tensor(data=[0] * 12)],
                 "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}]})
    assert req.outputs == [RequestedOutput("embedding", True)]


@pytest.mark.parametrize(("header", "blobs", "message"), [
    ({"inputs": [tensor(data=[0] * 11)]}, (), "11 values for shape [1, 2, 2, 3], which needs 12"),
    ({"inputs": [tensor(shape=(1, 2, 2, 3, 1), data=[0] * 12)]}, (), "does not fit the model's [-1, 2, 2, 3]"),
    ({"inputs": [tensor(shape=(0, 2, 2, 3), data=[])]}, (), "holds no rows"),
    ({"inputs": [tensor(shape=(1, -2, 2, 3), data=[])]}, (), "has a negative dimension"),
    ({"inputs": [tensor(shape="1,2", data=[])]}, (), "shape must be a list of integers"),
    ({"inputs": [tensor(datatype="INT64", data=[0] * 12)]}, (), "datatype 'INT64', but the model takes UINT8"),
    ({"inputs": [tensor(data=[[0] * 6, [0] * 5])]}, (), "not a rectangular list of numbers"),
    ({"inputs": [tensor(data=["a"] * 12)]}, (), "values that are not numbers"),
    ({"inputs": [tensor(data=[-1] * 12)]}, (), "values from -1 to -1 do not fit UINT8"),
    ({"inputs": [tensor(data=[0] * 12), tensor(data=[0] * 12)]}, (), "input 'pixels' is given twice"),
    ({"inputs": [tensor()]}, (), "has neither data nor parameters.binary_data_size"),
    ({"inputs": [tensor(data=[0] * 12, parameters={"binary_data_size": 12})]}, (b"x" * 12,), "has both data"),
    ({"inputs": [tensor(parameters={"binary_data_size": 13})]}, (b"x" * 12,), "reaches past the end of the body"),
    ({"inputs": [tensor(parameters={"binary_data_size": "12"})]}, (b"x" * 12,), "must be a byte count"),
    ({"inputs": [tensor(parameters={"binary_data_size": 12})]}, (b"x" * 13,), "add up to 12"),
    ({"inputs": [tensor(data=[0] * 12)], "outputs": [{"name": "x"}]}, (), "output 'x' is not an output"),
    ({"inputs": [tensor(data=[0] * 12)], "outputs": [{"name": "embedding"}] * 2}, (), "requested twice"),
    ({"inputs": [tensor(data=[0] * 12)], "outputs": [{"name": "embedding", "parameters": {"classification": True}}]},
     (), "output 'embedding': parameters.classification must be a whole number of classes from 1 up, got True"),
    ({"inputs": [tensor(data=[0] * 12)], "parameters": {"binary_data_output": "yes"}}, (), "must be true or false"),
    ({"inputs": [tensor(data=[0] * 12)], "parameters": []}, (), "parameters must be a JSON object"),
    ({"inputs": [tensor(data=[0] * 12)], "id": 5}, (), "id must be a string"),
    ({"inputs": [tensor(data=[0] * 12)], "outputs": "all"}, (), "outputs must be a list"),
    ({"inputs": {"pixels": []}}, (), "inputs must be a non-empty list"),
    ({"inputs": ["pixels"]}, (), "inputs[0] must be a JSON object"),
    ({"inputs": [{"name": 3}]}, (), "inputs[0]: name must be a string"),
])
def test_malformed_requests_say_what_is_wrong(header, blobs, message):
    with pytest.raises(InvalidRequest) as e:
        parse(header, *blobs)
    assert message in str(e.value)


def test_missing_inputs_and_disagreeing_batch_sizes():
    with pytest.raises(InvalidRequest, match=r"missing input\(s\): scale; the model takes pixels UINT8"):
        parse({"inputs": [tensor(data=[0] * 12)]}, inputs=(PIXELS, SCALE))
    with pytest.raises(InvalidRequest, match="different batch sizes"):
        parse({"inputs": [tensor(data=[0] * 12), tensor("scale", "FP32", (2, 1), data=[1.0, 2.0])]},
              inputs=(PIXELS, SCALE))


def test_non_finite_float_inputs_are_refused():
    bad = np.array([[np.nan], [np.inf]], np.float32)
    with pytest.raises(InvalidRequest, match="2 value\\(s\\) are NaN or infinite"):
        parse({"inputs": [tensor("scale", "FP32", (2, 1), parameters={"binary_data_size": 8})]}, bad.tobytes(),
              inputs=(SCALE,))
    with pytest.raises(InvalidRequest, match="NaN or infinite \\(or overflow FP32\\)"):
        parse({"inputs": [tensor("scale", "FP32", (1, 1), data=[1e300])]}, inputs=(SCALE,))


def test_header_length_problems():
    with pytest.raises(InvalidRequest, match="declares binary_data_size but the request has no"):
        parse_infer_request(json.dumps({"inputs": [tensor(parameters={"binary_data_size": 12})]}).encode(),
                            None, [PIXELS], OUTS)
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_infer_request(b'{"inputs": []}', "5", [PIXELS], OUTS)


def test_responses_json_and_binary_round_trip():
    p = np.array([[0.1, 0.2, 0.7]], np.float32)
    e = np.arange(4, dtype=np.float32).reshape(1, 4)
    raw, headers = encode_infer_response("m", 3, "id-1", [(RequestedOutput("probabilities", False), p),
                                                          (RequestedOutput("embedding", True), e)])
    assert headers["content-type"] == "application/octet-stream"
    n = int(headers["inference-header-content-length"])
    head = json.loads(raw[:n])
    assert head["model_name"] == "m" and head["model_version"] == "3" and head["id"] == "id-1"
    probs, emb = head["outputs"]
    assert {k: probs[k] for k in ("name", "datatype", "shape")} == {"name": "probabilities", "datatype": "FP32",
                                                                  "shape": [1, 3]}
    # float32 written as the shortest text that reads back as the same float32
    assert np.array_equal(np.array(probs["data"], np.float32), p[0]) and "0.1," in raw[:n].decode()
    assert emb["parameters"] == {"binary_data_size": 16} and np.array_equal(np.frombuffer(raw[n:], np.float32), e[0])
    raw, headers = encode_infer_response("m", 3, None, [(RequestedOutput("probabilities", False), p)])
    assert headers == {"content-type": "application/json"} and "id" not in json.loads(raw)


def test_an_int8_encoded_float_input_is_decoded_where_the_model_allows_it():
    mid = TensorSig("mid", "FP32", (-1, 4))
    q = np.array([[0, 10, 20, 255]], np.uint8)
    want = ((q.astype(np.float32) - 10) * 0.5).astype(np.float32)
    binary = {"inputs": [tensor("mid", "UINT8", (1, 4), parameters={"binary_data_size": 4, "scale": 0.5,
                                                                       "zero_point": 10})]}
    on_request = {"inputs": [tensor("mid", "UINT8", (1, 4), data=q.reshape(-1).tolist())],
                  "parameters": {"scale": 0.5, "zero_point": 10}}
    for header, blobs in ((binary, [q.tobytes()]), (on_request, [])):
        raw, length = body(header, *blobs)
        got = parse_infer_request(raw, length, [mid], OUTS, int8_inputs={"mid"}).inputs["mid"]
        assert got.dtype == np.float32 and np.array_equal(got, want)
    raw, length = body(binary, q.tobytes())
    with pytest.raises(InvalidRequest, match="datatype 'UINT8', but the model takes FP32"):
        parse_infer_request(raw, length, [mid], OUTS)  # a whole model's float input: no int8
    raw, length = body({"inputs": [tensor("mid", "UINT8", (1, 4), data=[1, 2, 3, 4])]})
    with pytest.raises(InvalidRequest, match=r"parameters\.scale"):
        parse_infer_request(raw, length, [mid], OUTS, int8_inputs={"mid"})
