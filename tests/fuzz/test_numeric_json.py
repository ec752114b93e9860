"""OIP JSON tensors parsed by simdjson (tandem.protocol.numeric_json) against orjson's general path: on every
request the protocol fuzzer makes and on mutations of a valid JSON request, both paths give the same arrays,
outputs and id, or the same error word for word."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import InvalidRequest
from tandem.protocol import numeric_json
from tandem.protocol.datatypes import TensorSig
from tandem.protocol.oip import parse_infer_request
from tests.fuzz import tally
from tests.fuzz.strategies import dumps, mutated
from tests.fuzz.test_fuzz_protocols import INPUTS, OUTPUTS, oip_request


@contextlib.contextmanager
def _path(fast: bool) -> Iterator[None]:
    """simdjson for every text, however small (fast), or never."""
    saved = numeric_json.MIN_BYTES, numeric_json.simdjson
    numeric_json.MIN_BYTES = 0
    if not fast:
        numeric_json.simdjson = None
    try:
        yield
    finally:
        numeric_json.MIN_BYTES, numeric_json.simdjson = saved


def _outcome(raw: bytes, length: str | None) -> tuple:
    try:
        req = parse_infer_request(raw, length, INPUTS, OUTPUTS, int8_inputs={"feat"})
    except InvalidRequest as e:
        return ("refused", str(e))
    arrays = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in req.inputs.items()}
    return ("parsed", arrays, req.outputs, req.id)


def same_either_way(raw: bytes, length: str | None) -> None:
    with _path(fast=True):
        fast = _outcome(raw, length)
    with _path(fast=False):
        general = _outcome(raw, length)
    assert fast == general


@settings(max_examples=tally.budget(300))
@given(oip_request())
def test_fuzzed_requests_parse_the_same_either_way(request_and_length):
    same_either_way(*request_and_length)


def _valid_json_request() -> bytes:
    rng = np.random.default_rng(0)
    return dumps({"id": "r1", "inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [2, 2, 2, 3],
         "data": rng.integers(0, 256, 24).tolist()},
        {"name": "feat", "datatype": "FP32", "shape": [2, 4], "data": [[0.5, -1, 2e3, 7], [0, 1.25, -0.0, 3]]}],
        "outputs": [{"name": "embedding"}], "parameters": {"binary_data_output": True}})


@settings(max_examples=tally.budget(400))
@given(st.data())
def test_mutations_of_a_json_request_parse_the_same_either_way(data):
    same_either_way(data.draw(mutated(_valid_json_request())), None)


def test_a_photo_as_json_takes_the_simdjson_path_and_matches_orjson():
    """A real-size request: its numbers arrive as one numpy buffer, with the general path's result."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (1, 100, 75, 3), dtype=np.uint8)
    feat = rng.normal(size=(1, 4)).astype(np.float32)
    raw = dumps({"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3], "data": pixels.ravel().tolist()},
        {"name": "feat", "datatype": "FP32", "shape": [1, 4], "data": feat.ravel().tolist()}]})
    assert len(raw) > numeric_json.MIN_BYTES
    doc = numeric_json.parse_request(raw)
    assert doc is not None
    assert [type(i["data"]) for i in doc["inputs"]] == [np.ndarray, np.ndarray]
    photo_inputs = [TensorSig("pixels", "UINT8", (-1, 100, 75, 3)), *INPUTS[1:]]
    req = parse_infer_request(raw, None, photo_inputs, OUTPUTS)
    assert req.inputs["pixels"].dtype == np.uint8 and np.array_equal(req.inputs["pixels"], pixels)
    assert np.array_equal(req.inputs["feat"], feat)
    with _path(fast=False):
        general = parse_infer_request(raw, None, photo_inputs, OUTPUTS)
    assert all(np.array_equal(general.inputs[k], v) and general.inputs[k].dtype == v.dtype
               for k, v in req.inputs.items())


def test_what_the_buffer_cannot_hold_goes_the_general_way():
    """Nested lists (as_buffer would flatten a ragged one), booleans, fractions for integers, negative numbers
    for an unsigned type, duplicate keys: the general path's answer, including its errors."""
    cases = [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [[1, 2, 3]] * 3 + [[4, 5], [6]]},
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [True] * 12},
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [1.5] * 12},
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [-1] + [0] * 11},
        # Ragged, yet as many numbers as the shape needs once flattened.
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [[1, 2], [], *range(10)]},
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [[1], *range(11)]},
    ]
    for item in cases:
        raw = dumps({"inputs": [item, {"name": "feat", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]})
        with _path(fast=True):
            doc = numeric_json.parse_request(raw)
        assert doc is None
        same_either_way(raw, None)
    # A "[" in a string (written out, or escaped) leaves the text's count of arrays unproven.
    flat = {"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": list(range(12))}
    for raw in (dumps({"id": "a[b", "inputs": [flat]}), dumps({"inputs": [flat]}).replace(b"{", b'{"id": "\\u005b",', 1)):
        with _path(fast=True):
            assert numeric_json.parse_request(raw) is None
        same_either_way(raw, None)
    with _path(fast=True):
        assert numeric_json.parse_request(dumps({"id": "ab", "inputs": [flat]})) is not None
    # 256 fits the buffer's uint64; UINT8's range is checked after, with the same words.
    too_large = dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [256] * 12},
                                  {"name": "feat", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]})
    with _path(fast=True):
        assert "do not fit UINT8" in _outcome(too_large, None)[1]
    same_either_way(too_large, None)
    twice = b'{"inputs": [], "inputs": [{"name": "feat", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
    with _path(fast=True):
        assert numeric_json.parse_request(twice) is None
    same_either_way(twice, None)


def test_a_parser_still_holding_a_document_is_replaced_not_given_up():
    """Each thread reuses its simdjson parser; were an object of the last document still alive (the parser then
    refuses to parse again), a new parser takes over instead of every later request going orjson's way."""
    flat = dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": list(range(12))}]})
    with _path(fast=True):
        assert numeric_json.parse_request(flat) is not None
        held = numeric_json._parse(b'{"kept": [1, 2]}')["kept"]  # a live object of the parser's last document
        before = numeric_json._local.parser
        doc = numeric_json.parse_request(flat)
        assert numeric_json._local.parser is not before
        assert doc is not None and np.array_equal(doc["inputs"][0]["data"], np.arange(12))
        assert held.as_list() == [1, 2]
