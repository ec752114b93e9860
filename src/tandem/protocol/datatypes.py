"""Tensor datatypes as the wire protocols name them (OIP v2) and their numpy equivalents: the one table.

The server checks requests against a model's :class:`TensorSig`; the device SDK names the arrays it
sends and reads the ones it gets back with the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem.errors import InvalidRequest

# OIP v2 datatypes with a fixed-size numpy equivalent (BYTES, variable-length strings, has none:
# they are not tensors a vision model takes).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
# Bundle manifests name dtypes the numpy way.
BUNDLE_TO_OIP = {"uint8": "UINT8", "float32": "FP32", "int64": "INT64"}


def datatype_of(arr: np.ndarray, what: str = "tensor") -> str:
    """The OIP datatype of ``arr`` (``what`` names it in the error when it has none)."""
    try:
        return _NAMES[arr.dtype]
    except KeyError:
        raise InvalidRequest(f"{what} of dtype {arr.dtype} has no Open Inference Protocol datatype; use one of "
                             f"{', '.join(str(d) for d in DATATYPES.values())}") from None


@dataclass(frozen=True)
class TensorSig:
    """What a model takes or gives: a name, an OIP datatype and a shape where -1 is any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    def describe(self) -> str:
        return f"{self.name} {self.datatype} {list(self.shape)}"
