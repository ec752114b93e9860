"""Tensors from a request, checked against what the model takes (tandem.protocol.datatypes), as numpy.

Shared by the OIP and TF-Serving codecs, so a tensor is validated the same way whichever protocol
carried it. Every failure is an InvalidRequest naming the tensor, what was expected and what arrived.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tandem.errors import InvalidRequest, quoted
from tandem.protocol.datatypes import TensorSig


def check_shape(sig: TensorSig, shape: Any) -> tuple[int, ...]:
    """The request's ``shape`` for input ``sig``: a list of non-negative integers fitting the model's."""
    if not isinstance(shape, list | tuple) or not all(type(d) is int for d in shape):
        raise InvalidRequest(f"input '{sig.name}': shape must be a list of integers, got {quoted(shape)}")
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"input '{sig.name}': shape {list(shape)} has a negative dimension")
    want = sig.shape
    if len(shape) != len(want) or any(w not in (-1, d) for w, d in zip(want, shape, strict=True)):
        raise InvalidRequest(
            f"input '{sig.name}': shape {list(shape)} does not fit the model's {list(want)} (-1: any size)"
        )
    if want and want[0] == -1 and shape[0] == 0:
        raise InvalidRequest(f"input '{sig.name}': shape {list(shape)} holds no rows; send at least one")
    return tuple(shape)


def check_datatype(sig: TensorSig, datatype: Any) -> None:
    if datatype != sig.datatype:
        raise InvalidRequest(
            f"input '{sig.name}': datatype {quoted(datatype)}, but the model takes {sig.datatype}; "
            f"send {sig.datatype} values"
        )


def element_count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def from_json_values(sig: TensorSig, data: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor from JSON numbers (flat row-major, or nested lists) of exactly ``shape``; ``data`` may also be
    a flat numpy array of them (a list tandem.protocol.numeric_json parsed)."""
    if isinstance(data, np.ndarray):
        return _values(sig, data, shape)
    if not isinstance(data, list):
        raise InvalidRequest(f"input '{sig.name}': data must be a JSON list of numbers, got {type(data).__name__}")
    try:
        arr = np.asarray(data)
    except ValueError as e:  # ragged nested lists
        raise InvalidRequest(f"input '{sig.name}': data is not a rectangular list of numbers ({e})") from e
    return _values(sig, arr, shape)


def _values(sig: TensorSig, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    expected = element_count(shape)
    if arr.size != expected:
        raise InvalidRequest(
            f"input '{sig.name}': {arr.size} values for shape {list(shape)}, which needs {expected}"
        )
    return _cast(sig, arr).reshape(shape)


def _cast(sig: TensorSig, arr: np.ndarray) -> np.ndarray:
    dtype = sig.dtype
    kind = arr.dtype.kind
    if arr.size == 0:
        return arr.astype(dtype)
    if dtype.kind == "b":
        if kind != "b":
            raise InvalidRequest(f"input '{sig.name}': BOOL values must be true or false")
        return arr
    if kind not in "iuf" and not (kind == "b" and dtype.kind in "iu"):
        raise InvalidRequest(f"input '{sig.name}': data holds values that are not numbers ({arr.dtype.name}); "
                             f"{sig.datatype} takes numbers")
    if dtype.kind in "iu":
        if kind == "f":
            raise InvalidRequest(f"input '{sig.name}': {sig.datatype} takes integers, the data holds fractions")
        info = np.iinfo(dtype)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise InvalidRequest(
                f"input '{sig.name}': values from {lo} to {hi} do not fit {sig.datatype} ({info.min}..{info.max})"
            )
        return arr.astype(dtype, copy=False)
    with np.errstate(over="ignore"):  # values too large for the type become inf: refused just below
        out = arr.astype(dtype, copy=False)
    check_finite(sig, out)
    return out


def check_finite(sig: TensorSig, arr: np.ndarray) -> None:
    """Float inputs must be finite: NaN or infinity propagates silently into every output."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InvalidRequest(
            f"input '{sig.name}': {bad} value(s) are NaN or infinite (or overflow {sig.datatype}); send finite numbers"
        )


def from_bytes(sig: TensorSig, buf: bytes | memoryview, offset: int, size: int, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor from raw little-endian row-major bytes (no copy; the array is read-only)."""
    dtype = sig.dtype
    expected = element_count(shape) * dtype.itemsize
    if size != expected:
        raise InvalidRequest(
            f"input '{sig.name}': binary_data_size {size} bytes, but shape {list(shape)} of {sig.datatype} "
            f"needs {expected}"
        )
    arr = np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=element_count(shape), offset=offset).reshape(shape)
    if dtype.kind == "b" and arr.size and np.frombuffer(buf, np.uint8, arr.size, offset).max() > 1:
        raise InvalidRequest(f"input '{sig.name}': BOOL bytes must be 0 or 1")
    check_finite(sig, arr)
    return arr


def from_nested(sig: TensorSig, data: Any, what: str = "value") -> np.ndarray:
    """A tensor from nested JSON lists whose nesting gives the shape (TF-Serving's formats)."""
    if not isinstance(data, list):
        raise InvalidRequest(f"input '{sig.name}': the {what} must be a (nested) JSON list of numbers, "
                             f"got {type(data).__name__}")
    try:
        arr = np.asarray(data)
    except ValueError as e:
        raise InvalidRequest(f"input '{sig.name}': the {what} is not a rectangular list of numbers ({e})") from e
    if arr.dtype.kind in "OU":
        raise InvalidRequest(f"input '{sig.name}': the {what} holds values that are not numbers "
                             "({\"b64\": ...} strings are not supported: the model takes numbers)")
    check_shape(sig, list(arr.shape))
    return _cast(sig, arr)
