"""Where the initializer bytes lie in a serialized ONNX model, read at the protobuf wire level.

Why not the ``onnx`` package: it comes with the training extra only, and re-serialising a parsed
model need not give the original bytes back. Walking the wire format needs no dependency and
yields byte ranges, so a patch can keep every byte outside the tensors exactly as it was.

The path followed (field numbers from onnx.proto): ModelProto.graph (7, a GraphProto) →
GraphProto.initializer (5, repeated TensorProto) → TensorProto.name (8), data_type (2) and
raw_data (9). Initializers that keep their values in the typed repeated fields (float_data, …)
and everything else (nodes, subgraphs, metadata) stay in the remainder that patches compress as a
whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_DATA_TYPE = 2
TENSOR_NAME = 8
TENSOR_RAW_DATA = 9

# TensorProto.DataType → bytes per element, for the byte-plane shuffle before compression.
_ELEMENT_SIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


class WireError(ValueError):
    """The bytes are not a protobuf message this reader understands."""


@dataclass(frozen=True)
class Payload:
    """The raw_data of one initializer: ``data[start:end]``."""

    name: bytes
    start: int
    end: int
    element_size: int


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end or shift > 63:
            raise WireError("truncated or over-long varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field number, wire type, value start, value end)`` for each field of a message."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            _, j = _varint(buf, i, end)
        elif wire == 1:
            j = i + 8
        elif wire == 5:
            j = i + 4
        elif wire == 2:
            length, i = _varint(buf, i, end)
            j = i + length
        else:  # groups (3, 4) are not used by ONNX
            raise WireError(f"unsupported wire type {wire}")
        if j > end:
            raise WireError("a field runs past the end of its message")
        yield number, wire, i, j
        i = j


def _tensor(buf: memoryview, start: int, end: int) -> Payload | None:
    name = b""
    dtype = 0
    raw: list[tuple[int, int]] = []
    for number, wire, s, e in fields(buf, start, end):
        if number == TENSOR_NAME and wire == 2:
            name = bytes(buf[s:e])
        elif number == TENSOR_DATA_TYPE and wire == 0:
            dtype, _ = _varint(buf, s, e)
        elif number == TENSOR_RAW_DATA and wire == 2:
            raw.append((s, e))
    if len(raw) != 1:  # none: values in typed fields; several: protobuf would merge them, keep as is
        return None
    s, e = raw[0]
    size = _ELEMENT_SIZE.get(dtype, 1)
    return Payload(name, s, e, size if (e - s) % size == 0 else 1)


def initializer_payloads(data: bytes) -> list[Payload]:
    """The raw_data ranges of the main graph's initializers, in file order. WireError if ``data``
    is not a well-formed protobuf message down that path."""
    buf = memoryview(data)
    out: list[Payload] = []
    for number, wire, s, e in fields(buf, 0, len(buf)):
        if number != MODEL_GRAPH or wire != 2:
            continue
        for g_number, g_wire, gs, ge in fields(buf, s, e):
            if g_number == GRAPH_INITIALIZER and g_wire == 2:
                p = _tensor(buf, gs, ge)
                if p is not None:
                    out.append(p)
    return out
