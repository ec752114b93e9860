"""Tensor-level patches between two ONNX files (TDP1 kind ``onnx``).

The target file is cut into the raw_data of its initializers and the bytes between them. Each
initializer is either copied from the source (same bytes, found by name or else by content
hash), sent XORed with the same-named source tensor (a fine-tune that nudged every weight leaves
the sign, exponent and high mantissa bits alone, so the XOR is mostly zero bits), or sent whole.
Sent tensors are byte-plane shuffled (all first bytes of the elements, then all second bytes, …),
which lets zstd see the slowly varying exponent bytes as runs. The bytes between the tensors
(nodes, names, shapes, metadata) go as one stream compressed against the source's own
between-tensor bytes as a dictionary, so an unchanged graph costs a few bytes.

Because the target is rebuilt by concatenating ranges, never re-serialised, it comes out byte
for byte as it was, whatever wrote it.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np

from tandem.delta import compress
from tandem.delta.format import KIND_ONNX, Header, Sections, section
from tandem.delta.onnxwire import Payload, initializer_payloads
from tandem.errors import PatchError

# Smaller initializers (shapes, scalars, axes) cost more as a reference than as bytes; they stay
# in the between-tensor stream. Part of the format: diff and apply must cut files the same way.
MIN_PAYLOAD = 64

OP_LITERAL = 1  # u64 n: the next n bytes of the literal stream
OP_COPY = 2  # u16 name length, name, sha256[32]: the source initializer's raw_data
OP_NEW = 3  # u8 element size, u64 n: the next n bytes of the tensor stream, unshuffled
OP_XOR = 4  # u8 element size, u16 name length, name, sha256[32]: source raw_data XOR the next len bytes
_WIDTHS = (1, 2, 4, 8)


def payloads(data: bytes) -> list[Payload]:
    return [p for p in initializer_payloads(data) if p.end - p.start >= MIN_PAYLOAD]


def _remainder(data: bytes, cut: list[Payload]) -> bytes:
    parts, pos = [], 0
    for p in cut:
        parts.append(data[pos : p.start])
        pos = p.end
    parts.append(data[pos:])
    return b"".join(parts)


def _shuffle(data: bytes, width: int) -> bytes:
    if width == 1:
        return data
    return np.frombuffer(data, np.uint8).reshape(-1, width).T.tobytes()


def _unshuffle(data: bytes, width: int) -> bytes:
    if width == 1:
        return data
    return np.frombuffer(data, np.uint8).reshape(width, -1).T.tobytes()


def _xor(a: bytes, b: bytes) -> bytes:
    return np.bitwise_xor(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)).tobytes()


def _ref(name: bytes, digest: bytes) -> bytes:
    return struct.pack("<H", len(name)) + name + digest


def diff(old: bytes, new: bytes) -> bytes:
    """A TDP1 ``onnx`` patch; raises onnxwire.WireError if either file is not a protobuf model."""
    src, dst = payloads(old), payloads(new)
    by_name: dict[bytes, list[tuple[Payload, bytes]]] = {}
    by_hash: dict[bytes, Payload] = {}
    for p in src:
        digest = hashlib.sha256(old[p.start : p.end]).digest()
        by_name.setdefault(p.name, []).append((p, digest))
        by_hash.setdefault(digest, p)

    ops, literals, tensors = bytearray(), [], []
    pos = 0
    for p in dst:
        if p.start > pos:
            ops += struct.pack("<BQ", OP_LITERAL, p.start - pos)
            literals.append(new[pos : p.start])
        body = new[p.start : p.end]
        digest = hashlib.sha256(body).digest()
        same_name = by_name.get(p.name, [])
        match = next((q for q, d in same_name if d == digest), None) or by_hash.get(digest)
        if match is not None:
            ops += struct.pack("<B", OP_COPY) + _ref(match.name, digest)
        else:
            sent = _shuffle(body, p.element_size)
            op = struct.pack("<BBQ", OP_NEW, p.element_size, len(body))
            for q, q_digest in same_name:
                if q.end - q.start == len(body):
                    xored = _shuffle(_xor(body, old[q.start : q.end]), p.element_size)
                    # A quick level decides; the stream is compressed hard once, below.
                    if len(compress.compress(xored, level=3)) < len(compress.compress(sent, level=3)):
                        sent = xored
                        op = struct.pack("<BB", OP_XOR, p.element_size) + _ref(q.name, q_digest)
                    break
            ops += op
            tensors.append(sent)
        pos = p.end
    if pos < len(new):
        ops += struct.pack("<BQ", OP_LITERAL, len(new) - pos)
        literals.append(new[pos:])
    return (Header.describe(KIND_ONNX, old, new).pack() + section(bytes(ops))
            + section(b"".join(literals), _remainder(old, src)) + section(b"".join(tensors)))


class _Ops:
    """A bounds-checked reader over the decompressed op stream."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise PatchError("the patch's op list is truncated")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def ref(self) -> tuple[bytes, bytes]:
        (n,) = self.take("<H")
        if self.pos + n + 32 > len(self.data):
            raise PatchError("the patch's op list is truncated inside a tensor reference")
        name = self.data[self.pos : self.pos + n]
        digest = self.data[self.pos + n : self.pos + n + 32]
        self.pos += n + 32
        return name, digest


def apply(old: bytes, patch: bytes, header: Header) -> bytes:
    try:
        src = payloads(old)
    except ValueError as e:  # WireError; the source matched the patch's hash, so the patch lied about its kind
        raise PatchError(f"the patch is of kind onnx, but the file it applies to is not an ONNX model ({e})") from e
    by_name: dict[bytes, list[Payload]] = {}
    for p in src:
        by_name.setdefault(p.name, []).append(p)

    def source(name: bytes, digest: bytes) -> bytes:
        for q in by_name.get(name, []):
            body = old[q.start : q.end]
            if hashlib.sha256(body).digest() == digest:
                return body
        raise PatchError(f"the patch refers to an initializer {name[:80]!r} with sha256 {digest.hex()[:12]}… "
                         "that the source model does not have")

    target = header.target_size
    sections = Sections(patch, limit=target + (1 << 20))
    ops = _Ops(sections.next("op list"))
    literals = sections.next("between-tensor bytes", _remainder(old, src))
    tensors = sections.next("tensor bytes")
    sections.finish()
    if len(literals) > target or len(tensors) > target:
        raise PatchError(f"the patch carries more bytes than its {target}-byte target")

    out = bytearray()
    li = ti = 0
    while ops.more():
        (code,) = ops.take("<B")
        if code == OP_LITERAL:
            (n,) = ops.take("<Q")
            if li + n > len(literals):
                raise PatchError("the patch's op list asks for more between-tensor bytes than it carries")
            piece = literals[li : li + n]
            li += n
        elif code == OP_COPY:
            piece = source(*ops.ref())
        elif code in (OP_NEW, OP_XOR):
            (width,) = ops.take("<B")
            if width not in _WIDTHS:
                raise PatchError(f"the patch names an element size of {width} bytes")
            if code == OP_NEW:
                (n,) = ops.take("<Q")
                base = None
            else:
                base = source(*ops.ref())
                n = len(base)
            if ti + n > len(tensors) or n % width:
                raise PatchError("the patch's op list asks for more tensor bytes than it carries")
            piece = _unshuffle(tensors[ti : ti + n], width)
            ti += n
            if base is not None:
                piece = _xor(piece, base)
        else:
            raise PatchError(f"the patch's op list holds an unknown op {code}")
        if len(out) + len(piece) > target:
            raise PatchError(f"the patch rebuilds more than the {target} bytes its header promises")
        out += piece
    if li != len(literals) or ti != len(tensors):
        raise PatchError("the patch carries bytes that its op list never uses")
    return bytes(out)
