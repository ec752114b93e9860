"""Delta patches from the network: damaged real patches, and patches built field by field with a
valid header and valid zstd sections around random op lists. apply() rebuilds exactly the target it
promised or raises PatchError/ChecksumError, never another exception, and never runs long."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tandem import delta
from tandem.delta import format as tdp
from tandem.delta import tensors
from tandem.errors import ChecksumError, PatchError
from tests.fuzz import tally
from tests.fuzz.strategies import mutated

ERRORS = (PatchError, ChecksumError)


def _model(seed: int) -> bytes:
    """A small ONNX model with initializers of several widths, some the same across seeds."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(np.arange(32, dtype=np.float32), "same"),  # unchanged: a COPY
        numpy_helper.from_array(rng.integers(-100, 100, 96).astype(np.int8), "q"),
        numpy_helper.from_array(rng.standard_normal(40).astype(np.float16), "h"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "shape"),  # small: stays between tensors
    ]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    return helper.make_model(graph).SerializeToString()


OLD, NEW = _model(0), _model(1)
NEW_NUDGED = _model(0).replace(b"\x00\x00\x80?", b"\x01\x00\x80?")  # a few weights nudged: an XOR
PATCHES = {"onnx": delta.diff(OLD, NEW, "onnx"), "onnx-xor": delta.diff(OLD, NEW_NUDGED, "onnx"),
           "bytes": delta.diff(OLD, NEW, "bytes")}
TARGETS = {"onnx": NEW, "onnx-xor": NEW_NUDGED, "bytes": NEW}


def apply(patch: bytes, old: bytes = OLD, max_size: int = tdp.MAX_FILE) -> None:
    out = tally.run("delta", lambda: delta.apply(old, patch, max_size), ERRORS)
    if out is not None:  # apply checks the target's hash itself; this checks that it did
        header = tdp.read_header(patch)
        assert len(out) == header.target_size and hashlib.sha256(out).digest() == header.target_sha256


def test_the_seed_patches_rebuild_their_targets():
    for name, patch in PATCHES.items():
        assert delta.apply(OLD, patch) == TARGETS[name], name
    assert delta.patch_kind(PATCHES["onnx"]) == "onnx"


@settings(max_examples=tally.budget(400))
@given(st.sampled_from(sorted(PATCHES)).flatmap(lambda k: mutated(PATCHES[k])))
def test_damaged_patches(patch):
    apply(patch)


@settings(max_examples=tally.budget(100))
@given(st.binary(max_size=300), st.integers(0, 4096))
def test_arbitrary_bytes_and_small_size_caps(data, max_size):
    apply(tdp.MAGIC + data)
    apply(PATCHES["onnx"], max_size=max_size)


SRC = tensors.payloads(OLD)
REFS = [(p.name, hashlib.sha256(OLD[p.start : p.end]).digest()) for p in SRC]


@st.composite
def op_list(draw: st.DrawFn) -> bytes:
    """Ops that are mostly well-formed: real or made-up tensor references, lengths near what the
    streams hold, now and then an unknown op or a cut in the middle."""
    ops = bytearray()
    for _ in range(draw(st.integers(0, 12))):
        code = draw(st.sampled_from([tensors.OP_LITERAL, tensors.OP_COPY, tensors.OP_NEW, tensors.OP_XOR, 0, 5, 255]))
        ops += bytes([code])
        width = draw(st.sampled_from([1, 2, 4, 8, 0, 3, 16]))
        name, digest = draw(st.sampled_from(REFS) | st.tuples(st.binary(max_size=8), st.binary(min_size=32,
                                                                                               max_size=32)))
        ref = struct.pack("<H", len(name)) + name + digest
        n = draw(st.integers(0, 300) | st.sampled_from([2**31, 2**63, 2**64 - 1]))
        if code == tensors.OP_LITERAL:
            ops += struct.pack("<Q", n)
        elif code == tensors.OP_COPY:
            ops += ref
        elif code == tensors.OP_NEW:
            ops += struct.pack("<BQ", width, n)
        elif code == tensors.OP_XOR:
            ops += struct.pack("<B", width) + ref
    if ops and draw(st.integers(0, 9)) == 0:
        del ops[draw(st.integers(0, len(ops) - 1)) :]
    return bytes(ops)


@st.composite
def built_patch(draw: st.DrawFn) -> bytes:
    """A header that fits OLD (so apply gets past the source check) and three zstd sections,
    whose declared raw lengths are usually right."""
    kind = draw(st.sampled_from([tdp.KIND_ONNX, tdp.KIND_ONNX, tdp.KIND_BYTES]))
    target = draw(st.binary(max_size=400))
    size = draw(st.integers(0, 4096) | st.just(len(target)))
    sha = hashlib.sha256(target).digest() if draw(st.booleans()) else draw(st.binary(min_size=32, max_size=32))
    header = tdp.Header(kind, len(OLD), hashlib.sha256(OLD).digest(), size, sha).pack()
    remainder = tensors._remainder(OLD, SRC)
    streams = [(draw(op_list()), b""), (draw(st.binary(max_size=300)), remainder), (draw(st.binary(max_size=600)), b"")]
    if kind == tdp.KIND_BYTES:
        streams = [(target, OLD)]
    body = b""
    for data, dictionary in streams[: draw(st.integers(0, len(streams)))] if draw(st.integers(0, 9)) == 0 else streams:
        stored = tdp.compress.compress(data, dictionary, level=1)
        raw_len = len(data) if draw(st.integers(0, 7)) else draw(st.integers(0, 1 << 20) | st.just(2**64 - 1))
        body += struct.pack("<QQ", raw_len, len(stored)) + stored
    if draw(st.integers(0, 9)) == 0:
        body += draw(st.binary(min_size=1, max_size=8))
    return header + body


@settings(max_examples=tally.budget(500))
@given(built_patch())
def test_patches_built_from_random_ops(patch):
    apply(patch)


def test_a_built_patch_can_rebuild_its_target():
    """The builder's ops are real ops: one literal of the whole target, zero tensor bytes."""
    target = b"x" * 100
    header = tdp.Header(tdp.KIND_ONNX, len(OLD), hashlib.sha256(OLD).digest(), 100,
                        hashlib.sha256(target).digest()).pack()
    patch = (header + tdp.section(struct.pack("<BQ", tensors.OP_LITERAL, 100))
             + tdp.section(target, tensors._remainder(OLD, SRC)) + tdp.section(b""))
    assert delta.apply(OLD, patch) == target


@pytest.mark.parametrize("declared", [2**31, 2**63])
def test_a_section_that_declares_more_than_the_target_is_refused_before_inflating(declared):
    header = tdp.Header(tdp.KIND_BYTES, len(OLD), hashlib.sha256(OLD).digest(), 10, b"\0" * 32).pack()
    stored = tdp.compress.compress(b"\0" * (1 << 20))
    with pytest.raises(PatchError, match="over the 10-byte limit"):
        delta.apply(OLD, header + struct.pack("<QQ", declared, len(stored)) + stored)
