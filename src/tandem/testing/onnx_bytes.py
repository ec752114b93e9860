"""A tiny ONNX classifier written byte by byte at the protobuf wire level, with no ``onnx`` package.

Why by hand: the OTA test vectors (tandem.testing.ota_vectors) commit model files and a delta patch
between them, and must come out identical on every regeneration. ``onnx.helper`` may change what it
writes (IR version, producer, field order) from one release to the next; these few encoders cannot.
The model is real (ONNX Runtime runs it): uint8 ``pixels`` [N, 4, 4, 3] → Cast → Mul 1/255 → Reshape [N, 48] →
MatMul ``features.weight`` [48, 16] → Relu → MatMul ``head.weight`` [16, 4] → Add ``head.bias`` →
Softmax → ``probabilities`` [N, 4].

Field numbers are onnx.proto's: ModelProto (ir_version 1, producer_name 2, graph 7, opset_import 8),
GraphProto (node 1, name 2, initializer 5, input 11, output 12), NodeProto (input 1, output 2, name 3,
op_type 4, attribute 5), TensorProto (dims 1, data_type 2, name 8, raw_data 9).
"""

from __future__ import annotations

import hashlib

import numpy as np

FLOAT, UINT8, INT64 = 1, 2, 7  # TensorProto.DataType
HEIGHT, WIDTH, CHANNELS, HIDDEN, CLASSES = 4, 4, 3, 16, 4
FEATURES = HEIGHT * WIDTH * CHANNELS
IR_VERSION, OPSET = 8, 13


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray, data_type: int) -> bytes:
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, data_type) + _bytes(8, name) + _bytes(9, array.tobytes())


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, elem_type) + _bytes(2, shape)))


def _node(op: str, inputs: list[str], outputs: list[str], ints: dict[str, int] | None = None) -> bytes:
    body = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    body += _bytes(3, f"{op.lower()}_{outputs[0]}") + _bytes(4, op)
    for name, value in (ints or {}).items():
        body += _bytes(5, _bytes(1, name) + _int(3, value) + _int(20, 2))  # AttributeProto type INT = 2
    return body


def weights(seed: str, *shape: int) -> np.ndarray:
    """Little-endian float32 in [-0.5, 0.5) from SHAKE-256 of ``seed``: the same on every machine and
    every numpy (whose random streams may change between releases)."""
    n = int(np.prod(shape))
    words = np.frombuffer(hashlib.shake_256(seed.encode()).digest(4 * n), "<u4")
    return (words.astype(np.float64) / 2**32 - 0.5).astype("<f4").reshape(shape)


def classifier(features: np.ndarray, head: np.ndarray, bias: np.ndarray) -> bytes:
    """The serialized model with these weights ([48, 16], [16, 4] and [4] float32)."""
    nodes = [
        _node("Cast", ["pixels"], ["pixels_f"], {"to": FLOAT}),
        _node("Mul", ["pixels_f", "scale"], ["scaled"]),  # the bundle's normalisation, in the graph: x / 255
        _node("Reshape", ["scaled", "flat_shape"], ["flat"]),
        _node("MatMul", ["flat", "features.weight"], ["hidden"]),
        _node("Relu", ["hidden"], ["hidden_relu"]),
        _node("MatMul", ["hidden_relu", "head.weight"], ["head"]),
        _node("Add", ["head", "head.bias"], ["logits"]),
        _node("Softmax", ["logits"], ["probabilities"], {"axis": 1}),
    ]
    shape = np.array([-1, FEATURES], dtype="<i8")
    graph = (b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "tiny")
             + _bytes(5, _tensor("scale", np.array([1 / 255], dtype="<f4"), FLOAT))
             + _bytes(5, _tensor("flat_shape", shape, INT64))
             + _bytes(5, _tensor("features.weight", features.astype("<f4"), FLOAT))
             + _bytes(5, _tensor("head.weight", head.astype("<f4"), FLOAT))
             + _bytes(5, _tensor("head.bias", bias.astype("<f4"), FLOAT))
             + _bytes(11, _value_info("pixels", UINT8, ["N", HEIGHT, WIDTH, CHANNELS]))
             + _bytes(12, _value_info("probabilities", FLOAT, ["N", CLASSES])))
    opset = _int(2, OPSET)
    return _int(1, IR_VERSION) + _bytes(2, "tandem.testing.onnx_bytes") + _bytes(7, graph) + _bytes(8, opset)

