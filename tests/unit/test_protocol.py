"""tandem.protocol's both directions and its tables: what a client writes the server reads, what the
server writes a client reads; refusals become the error the server raised; JSON without orjson."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tandem.device.wire import OipV2, TfServing, wire_protocol
from tandem.errors import (
    Forbidden,
    InvalidRequest,
    NoFaceFound,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    TandemError,
    Unavailable,
)
from tandem.protocol import jsonbody, oip, status, tfserving
from tandem.protocol.datatypes import DATATYPES, TensorSig, datatype_of

INPUTS = [TensorSig("pixels", "UINT8", (-1, 2, 2, 3)), TensorSig("scale", "FP32", (-1, 1))]
OUTPUTS = [TensorSig("probabilities", "FP32", (-1, 3))]


@pytest.mark.parametrize("binary", [True, False])
def test_a_client_request_is_what_the_server_parses(binary: bool) -> None:
    arrays = {"pixels": np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), "scale": np.ones((2, 1), np.float32)}
    body, headers = oip.encode_infer_request(arrays, ["probabilities"], binary=binary)
    req = oip.parse_infer_request(body, headers.get(oip.HEADER_LENGTH), INPUTS, OUTPUTS)
    assert all(np.array_equal(req.inputs[n], a) for n, a in arrays.items())
    assert req.outputs == [oip.RequestedOutput("probabilities", binary)]
    assert headers["Content-Type"] == (oip.BINARY_TYPE if binary else oip.JSON_TYPE)


@pytest.mark.parametrize("binary", [True, False])
def test_a_server_answer_is_what_the_client_reads(binary: bool) -> None:
    probs = np.array([[0.25, 0.5, 0.25]], np.float32)
    body, headers = oip.encode_infer_response("faces", 3, None, [(oip.RequestedOutput("probabilities", binary), probs)])
    got = oip.decode_infer_response(body, headers.get(oip.HEADER_LENGTH.lower()), "http://x")
    assert (got.model_name, got.model_version) == ("faces", 3)
    assert got.outputs["probabilities"].dtype == np.float32 and np.array_equal(got.outputs["probabilities"], probs)


def test_an_answer_that_is_not_oip_is_the_servers_fault() -> None:
    with pytest.raises(Unavailable, match="no 'outputs' list"):
        oip.decode_infer_response(b'{"error": "x"}', None, "http://x")
    with pytest.raises(Unavailable, match="past the end"):
        oip.decode_infer_response(b"{}", "99", "http://x")


def test_tfserving_columns_both_ways_and_the_status_version() -> None:
    x = np.zeros((2, 2, 2, 3), np.uint8)
    inputs, rows = tfserving.parse_predict(tfserving.encode_request({"pixels": x}), INPUTS[:1])
    assert not rows and np.array_equal(inputs["pixels"], x)
    answer = tfserving.encode_predict({"probabilities": np.ones((2, 3), np.float32)}, rows)
    out = tfserving.decode_answer(answer, "http://x", ["probabilities"])
    assert out["probabilities"].shape == (2, 3) and out["probabilities"].dtype == np.float32
    assert tfserving.served_version(tfserving.encode_status([1, 4])) == 4
    assert tfserving.served_version({"model_version_status": "nonsense"}) is None
    assert tfserving.model_path("m", "production") == "/v1/models/m/labels/production"
    assert tfserving.model_path("m", 2) == "/v1/models/m/versions/2" and oip.model_path("m") == "/v2/models/m"


def test_one_datatype_table() -> None:
    assert {datatype_of(np.zeros(1, d)) for d in DATATYPES.values()} == set(DATATYPES)
    with pytest.raises(InvalidRequest, match="complex128 has no Open Inference Protocol datatype"):
        datatype_of(np.zeros(1, np.complex128), "input 'x'")


@pytest.mark.parametrize(("code", "cls"), [
    (400, InvalidRequest), (403, Forbidden), (404, NotFound), (413, PayloadTooLarge), (422, NoFaceFound),
    (409, InvalidRequest), (504, RequestTimeout), (502, Unavailable), (302, Unavailable),
])
def test_a_refusal_becomes_the_error_the_server_raised(code: int, cls: type[TandemError]) -> None:
    e = status.error_for(code, "no")
    assert type(e) is cls and str(e) == "no"


def test_retry_after_and_the_servers_message() -> None:
    limited = status.error_for(429, "slow down", status.retry_after("7"))
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    assert status.error_for(503, "busy", status.retry_after("soon")).retry_after == 1.0  # type: ignore[attr-defined]
    assert status.retry_after("inf") is None and status.retry_after(None) is None
    assert status.error_message(b'{"error": "no such model"}') == "no such model"
    assert status.error_message(b"<html>") is None and status.error_message(b'{"error": 3}') is None


@pytest.mark.parametrize("fast", [True, False])
def test_json_with_or_without_orjson(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast:
        monkeypatch.setattr(jsonbody, "orjson", None)  # the device SDK's base install
    assert jsonbody.loads(jsonbody.dumps({"a": np.arange(3), "b": np.float32(0.5)})) == {"a": [0, 1, 2], "b": 0.5}
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        jsonbody.request(b'{"x": NaN}')
    with pytest.raises(Unavailable, match="the answer is not JSON"):
        jsonbody.answer(memoryview(b"<html>").tobytes(), "http://x")


def test_wire_protocols_from_names_or_objects() -> None:
    assert isinstance(wire_protocol("oip"), OipV2) and wire_protocol("oip").binary  # type: ignore[attr-defined]
    assert not wire_protocol("oip", binary=False).binary  # type: ignore[attr-defined]
    assert isinstance(wire_protocol("tfserving"), TfServing)
    json_oip = OipV2(binary=False)
    assert wire_protocol(json_oip) is json_oip
    with pytest.raises(InvalidRequest, match="OipV2\\(binary=True\\)"):
        wire_protocol(json_oip, binary=True)
    with pytest.raises(InvalidRequest, match="'grpc'"):
        wire_protocol("grpc")
    request = OipV2().infer_request("m.tail.5", 2, {"x": np.zeros((1, 4), np.uint8)}, None,
                                    {"x": {"scale": 0.1, "zero_point": 3}})
    assert request.path == "/v2/models/m.tail.5/versions/2/infer"


def test_tf_serving_classify_examples_take_the_context_and_refuse_what_the_model_lacks():
    inputs = [TensorSig("pixels", "UINT8", (-1, 1, 2)), TensorSig("scale", "FP32", (-1, 1))]
    body = b'{"context": {"scale": [0.5]}, "examples": [{"pixels": [[1, 2]]}, {"pixels": [[3, 4]], "scale": [2]}]}'
    arrays = tfserving.parse_classify(body, inputs)
    assert arrays["pixels"].tolist() == [[[1, 2]], [[3, 4]]] and arrays["scale"].tolist() == [[0.5], [2.0]]
    for bad, text in ((b'{"examples": [{"pixels": [[1, 2]]}]}', "examples[0]: missing input(s) scale"),
                      (b'{"examples": []}', "'examples' must be a non-empty list"),
                      (b'{"signature_name": "x", "examples": [{}]}', "signature_name 'x'")):
        with pytest.raises(InvalidRequest, match=re.escape(text)):
            tfserving.parse_classify(bad, inputs)
    assert tfserving.encode_classify(np.array([[0.25, 0.75]], np.float32), ["a", "b"]) == (
        b'{"result":[[["a",0.25],["b",0.75]]]}')
