"""Request bodies from the network: the OIP v2 splitter and JSON/binary tensors, TF-Serving bodies
and gzip/deflate bodies. Every input gets a clean result that fits the model or InvalidRequest
(PayloadTooLarge for bodies that inflate past the limit), never another exception."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import InvalidRequest, PayloadTooLarge
from tandem.protocol.datatypes import DATATYPES, TensorSig
from tandem.protocol.oip import InferRequest, parse_infer_request
from tandem.protocol.tfserving import parse_predict
from tandem.server import body as bodies
from tests.fuzz import tally
from tests.fuzz.strategies import dumps, json_values, mutated, nested, numbers, text

PIXELS = TensorSig("pixels", "UINT8", (-1, 2, 2, 3))
# A split's tail input: FP32, or UINT8 with scale and zero point (int8 transfer).
FEAT = TensorSig("feat", "FP32", (-1, 4))
INPUTS = [PIXELS, FEAT]
OUTPUTS = [TensorSig("probabilities", "FP32", (-1, 3)), TensorSig("embedding", "FP32", (-1, 4))]
KEYS = st.sampled_from(["inputs", "outputs", "name", "shape", "datatype", "data", "parameters", "id",
                        "binary_data_size", "binary_data", "binary_data_output", "scale", "zero_point",
                        "classification"]) | text
ANY = json_values(KEYS)
OIP_ERRORS = (InvalidRequest,)


def _check_clean(req: InferRequest) -> None:
    """What a request that parsed must hold: every input, of the model's dtype and shape, one batch."""
    assert set(req.inputs) == {s.name for s in INPUTS}
    rows = {a.shape[0] for a in req.inputs.values()}
    assert len(rows) == 1 and rows.pop() >= 1
    for sig in INPUTS:
        arr = req.inputs[sig.name]
        assert arr.dtype == sig.dtype and arr.ndim == len(sig.shape)
        assert all(w in (-1, d) for w, d in zip(sig.shape, arr.shape, strict=True))
        if arr.dtype.kind == "f":
            assert np.isfinite(arr).all()
    names = [o.name for o in req.outputs]  # "outputs": [] asks for none, and gets none
    assert len(set(names)) == len(names) and set(names) <= {s.name for s in OUTPUTS}


def parse(raw: bytes, length: str | None) -> None:
    req = tally.run("oip", lambda: parse_infer_request(raw, length, INPUTS, OUTPUTS, int8_inputs={"feat"}),
                    OIP_ERRORS)
    if req is not None:
        _check_clean(req)


def often(right: st.SearchStrategy, wrong: st.SearchStrategy, odds: int = 15) -> st.SearchStrategy:
    """``right`` about ``odds`` times in ``odds + 1``, else ``wrong``: most inputs get far enough to
    reach the deeper checks, the rest try everything else."""
    # The right choice is the simplest one (0), where Hypothesis's generation and shrinking lean.
    return st.integers(0, odds).flatmap(lambda i: wrong if i == odds else right)


def leaves(datatype: str) -> st.SearchStrategy:
    """Values of ``datatype``'s range, chosen per tensor (one odd leaf spoils the whole tensor)."""
    if datatype == "BOOL":
        fitting = st.booleans()
    elif datatype in DATATYPES and DATATYPES[datatype].kind in "iu":
        info = np.iinfo(DATATYPES[datatype])
        fitting = st.integers(max(info.min, -1000), min(info.max, 1000))
    else:
        fitting = st.floats(-100, 100, width=32)
    return often(st.just(fitting), st.just(numbers | st.booleans())).flatmap(lambda leaf: leaf)


@st.composite
def tensor(draw: st.DrawFn, sig: TensorSig, rows: int, binary: list[bytes]) -> dict:
    """An input tensor that is mostly right: its name, a plausible datatype and shape, data of that
    shape or a binary_data_size (whose bytes go into ``binary``); now and then something else."""
    t: dict = {}
    if draw(often(st.just(True), st.booleans())):
        t["name"] = draw(often(st.just(sig.name), ANY))
    int8 = sig is FEAT and draw(st.integers(0, 2)) == 0
    datatype = draw(often(st.just("UINT8" if int8 else sig.datatype), st.sampled_from([*DATATYPES, "BYTES"])))
    if draw(often(st.just(True), st.booleans())):
        t["datatype"] = draw(often(st.just(datatype), ANY))
    shape = draw(often(st.just([rows if d == -1 else d for d in sig.shape]),
                       st.lists(st.integers(-2, 6) | st.sampled_from([2**31, 2**62, 2**64]), max_size=5)))
    if draw(often(st.just(True), st.booleans())):
        t["shape"] = draw(often(st.just(shape), ANY))
    params: dict = {}
    if datatype == "UINT8" and sig is FEAT:
        params["scale"] = draw(often(st.floats(1e-3, 10), numbers | ANY))
        params["zero_point"] = draw(often(st.integers(0, 255), st.integers(-1, 256) | ANY))
    small = all(type(d) is int and 0 <= d <= 6 for d in shape)
    if draw(st.booleans()):
        n = int(np.prod(shape)) if small else draw(st.integers(0, 64))
        size = n * (DATATYPES[datatype].itemsize if datatype in DATATYPES else 1)
        params["binary_data_size"] = draw(often(st.just(size), st.integers(-5, 1 << 40) | ANY))
        blob = draw(st.binary(min_size=size, max_size=size)) if size <= 4096 else b""
        if datatype in DATATYPES and DATATYPES[datatype].kind == "f" and draw(often(st.just(True), st.just(False))):
            blob = np.frombuffer(blob, np.uint8).astype(DATATYPES[datatype]).tobytes()[:size]  # finite values
        binary.append(draw(often(st.just(blob), st.just(blob[: len(blob) // 2]))))
        if draw(st.integers(0, 9)) == 0:
            t["data"] = draw(ANY)
    else:
        t["data"] = draw(often(nested(shape, leaves(datatype)) if small else ANY, ANY, odds=4))
    if params or draw(st.integers(0, 9)) == 0:
        t["parameters"] = draw(often(st.just(params), ANY))
    return t


@st.composite
def oip_request(draw: st.DrawFn) -> tuple[bytes, str | None]:
    binary: list[bytes] = []
    rows = draw(often(st.integers(1, 3), st.just(0)))
    sigs = draw(often(st.permutations(INPUTS), st.lists(st.sampled_from(INPUTS), max_size=3)))
    req: dict = {"inputs": [draw(tensor(s, draw(often(st.just(rows), st.integers(0, 3))), binary)) for s in sigs]}
    if draw(st.integers(0, 3)) == 0:
        req["outputs"] = draw(often(st.lists(st.fixed_dictionaries(
            {"name": often(st.sampled_from([o.name for o in OUTPUTS]), ANY)},
            optional={"parameters": st.fixed_dictionaries({}, optional={"binary_data": often(st.booleans(), ANY),
                                                                        "classification": ANY})}), max_size=3), ANY))
    if draw(st.integers(0, 3)) == 0:
        req["parameters"] = draw(often(st.fixed_dictionaries({}, optional={
            "binary_data_output": often(st.booleans(), ANY), "scale": numbers, "zero_point": st.integers(-1, 256)}),
            ANY))
    if draw(st.integers(0, 5)) == 0:
        req["id"] = draw(often(st.text(max_size=8), ANY))
    header = dumps(draw(often(st.just(req), ANY, odds=20)))
    tail = b"".join(binary)
    length: str | None = str(len(header)) if binary else None
    choice = draw(st.integers(0, 9))
    if choice == 0:
        length = draw(st.none() | st.text(max_size=12) | st.integers(-3, len(header) + len(tail) + 3).map(str))
    elif choice == 1:
        tail += draw(st.binary(max_size=16))
    return header + tail, length


@settings(max_examples=tally.budget(400))
@given(oip_request())
def test_oip_requests_parse_or_are_refused(request_and_length):
    parse(*request_and_length)


@settings(max_examples=tally.budget(150))
@given(st.binary(max_size=512), st.none() | st.text(max_size=12) | st.integers(-2, 600).map(str))
def test_oip_arbitrary_bytes(raw, length):
    parse(raw, length)


def _valid_binary_request() -> tuple[bytes, str]:
    pix = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    head = dumps({"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [2, 2, 2, 3], "parameters": {"binary_data_size": 24}},
        {"name": "feat", "datatype": "UINT8", "shape": [2, 4],
         "parameters": {"binary_data_size": 8, "scale": 0.5, "zero_point": 3}}],
        "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}]})
    return head + pix.tobytes() + bytes(range(8)), str(len(head))


@settings(max_examples=tally.budget(300))
@given(st.data())
def test_oip_mutations_of_a_valid_binary_request(data):
    raw, length = _valid_binary_request()
    mutant = data.draw(mutated(raw))
    parse(mutant, length if data.draw(st.integers(0, 3)) else str(int(length) + data.draw(st.integers(-3, 3))))


def test_the_valid_seed_parses():
    raw, length = _valid_binary_request()
    req = parse_infer_request(raw, length, INPUTS, OUTPUTS, int8_inputs={"feat"})
    _check_clean(req)
    assert req.inputs["feat"][0, 0] == pytest.approx((0 - 3) * 0.5)


# --- TF-Serving ---------------------------------------------------------------------------------

TF_KEYS = st.sampled_from(["instances", "inputs", "signature_name", "pixels", "feat"]) | text


@st.composite
def tf_request(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(0, 3))
    pix = nested([rows, 2, 2, 3], leaves("UINT8"))
    feat = nested([rows, 4], leaves("FP32"))
    value = draw(st.one_of(
        st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries(
            {"pixels": nested([2, 2, 3], leaves("UINT8")), "feat": nested([4], leaves("FP32"))}), max_size=3)}),
        st.fixed_dictionaries({"inputs": st.fixed_dictionaries({"pixels": pix, "feat": feat})}),
        st.fixed_dictionaries({"instances": pix}),
        json_values(TF_KEYS),
    ))
    if isinstance(value, dict) and draw(st.integers(0, 5)) == 0:
        value["signature_name"] = draw(json_values(TF_KEYS, 3))
    return dumps(value)


def _tf(raw: bytes, inputs: list[TensorSig]) -> None:
    out = tally.run("tfserving", lambda: parse_predict(raw, inputs), (InvalidRequest,))
    if out is not None:
        arrays, _rows = out
        assert set(arrays) == {s.name for s in inputs}
        for sig in inputs:
            assert arrays[sig.name].dtype == sig.dtype and arrays[sig.name].shape[0] >= 1


@settings(max_examples=tally.budget(300))
@given(tf_request(), st.sampled_from([[PIXELS], INPUTS]))
def test_tfserving_bodies_parse_or_are_refused(raw, inputs):
    _tf(raw, inputs)


@settings(max_examples=tally.budget(100))
@given(st.binary(max_size=256))
def test_tfserving_arbitrary_bytes(raw):
    _tf(raw, INPUTS)


# --- Content-Encoding -------------------------------------------------------------------------

@st.composite
def encoded(draw: st.DrawFn) -> tuple[bytes, str]:
    encoding = draw(st.sampled_from(["gzip", "deflate"]))
    plain = draw(st.binary(max_size=2048) | st.integers(0, 100_000).map(lambda n: b"\0" * n))
    packed = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
    return draw(st.just(packed) | mutated(packed) | st.binary(max_size=64)), encoding


@settings(max_examples=tally.budget(200))
@given(encoded(), st.integers(0, 4096))
def test_compressed_bodies_inflate_within_the_limit_or_are_refused(body, limit):
    data, encoding = body
    out = tally.run("content-encoding", lambda: bodies._decompress(data, encoding, limit),
                    (InvalidRequest, PayloadTooLarge))
    assert out is None or len(out) <= limit


def test_a_gzip_bomb_stops_at_the_limit():
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="decompressed"):
        bodies._decompress(bomb, "gzip", 1 << 20)

