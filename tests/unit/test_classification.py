"""Triton's classification extension: the top K classes as "score:index:label" strings, and BYTES
tensors in both encodings of an answer."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.errors import InvalidRequest
from tandem.protocol import classification, jsonbody
from tandem.protocol.oip import HEADER_LENGTH, RequestedOutput, encode_infer_response


def test_top_k_is_best_first_with_labels_where_there_are_any():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]], np.float32)
    got = classification.top_k(scores, 2, ["a", "b", "c"])
    assert got.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"], [b"0.500000:0:a", b"0.500000:1:b"]]
    assert classification.top_k(scores, 9).tolist()[0] == [b"0.700000:1", b"0.200000:2", b"0.100000:0"]


@pytest.mark.parametrize(("value", "shape", "text"), [
    (0, (-1, 3), "from 1 up, got 0"), (True, (-1, 3), "got True"), (2.0, (-1, 3), "got 2.0"),
    (2, (-1, 3, 2), "classification takes an output of one score per class, [batch, classes]"),
])
def test_a_class_count_that_cannot_be_served_says_why(value, shape, text):
    with pytest.raises(InvalidRequest) as e:
        classification.check_count(value, "probabilities", shape)
    assert text in str(e.value)


def test_bytes_outputs_as_json_strings_and_as_length_prefixed_binary():
    arr = classification.top_k(np.array([[0.25, 0.75]], np.float32), 2, ["x", "y"])
    body, headers = encode_infer_response("m", 1, None, [(RequestedOutput("p", binary=False, classification=2), arr)])
    out = jsonbody.loads(body)["outputs"][0]
    assert out == {"name": "p", "datatype": "BYTES", "shape": [1, 2], "data": ["0.750000:1:y", "0.250000:0:x"]}
    body, headers = encode_infer_response("m", 1, None, [(RequestedOutput("p", binary=True, classification=2), arr)])
    split = int(headers[HEADER_LENGTH.lower()])
    raw = body[split:]
    assert raw == b"\x0c\x00\x00\x000.750000:1:y\x0c\x00\x00\x000.250000:0:x"
    assert jsonbody.loads(body[:split])["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
