"""Hypothesis strategies shared by the fuzzers: JSON of any shape, and byte-level mutations."""

from __future__ import annotations

import json

from hypothesis import strategies as st

# Integers past 64 bits and floats past float32 are where JSON decoders and casts differ.
numbers = st.one_of(
    st.integers(min_value=-300, max_value=300),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e39, -1e39, 65520.0, 1e-46]),
)
# Mostly valid UTF-8 text; now and then a lone surrogate, which no UTF-8 JSON can carry.
text = st.integers(0, 20).flatmap(lambda i: st.text(st.characters(codec="utf-8"), max_size=8) if i else st.text(max_size=4))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)


def json_values(keys: st.SearchStrategy[str] = text, max_leaves: int = 20) -> st.SearchStrategy:
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(keys, kids, max_size=5),
                        max_leaves=max_leaves)


def dumps(value: object) -> bytes:
    """JSON bytes the way any client might write them (the stdlib allows NaN and big integers;
    servers must cope with both)."""
    return json.dumps(value, allow_nan=True).encode()


def nested(shape: list[int], leaf: st.SearchStrategy) -> st.SearchStrategy:
    """Nested lists of exactly ``shape`` (small shapes only) holding ``leaf`` values."""
    if not shape:
        return leaf
    return st.lists(nested(shape[1:], leaf), min_size=shape[0], max_size=shape[0])


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_edits: int = 4) -> bytes:
    """``seed`` with a few bit flips, byte overwrites, insertions, deletions or a truncation."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            n = draw(st.integers(1, 64))
            data[at:at] = data[at : at + n]
    return bytes(data)

