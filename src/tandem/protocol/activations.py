"""int8 transfer of a split's intermediate tensor: a quarter of the fp32 bytes on the uplink.

Per-tensor affine quantization to uint8 (as ONNX's QuantizeLinear): ``q = clip(round(x / scale) +
zero_point, 0, 255)``, ``x ≈ (q - zero_point) · scale``, with ``scale = (max - min) / 255`` over the
tensor (min ≤ 0 ≤ max, so that 0 is exact). The error is at most ``scale / 2`` per value. The device
sends ``q`` as a UINT8 tensor with ``scale`` and ``zero_point`` beside it (OIP v2 input parameters,
tandem.protocol.oip decodes them on the server).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bytes of the two parameters that travel with the tensor (float32 scale, int32 zero point).
PARAMETER_BYTES = 8


@dataclass(frozen=True)
class Quantized:
    values: np.ndarray  # uint8, the tensor's shape
    scale: float
    zero_point: int

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes) + PARAMETER_BYTES


def quantize(x: np.ndarray) -> Quantized:
    x = np.asarray(x, dtype=np.float32)
    lo, hi = min(float(x.min(initial=0.0)), 0.0), max(float(x.max(initial=0.0)), 0.0)
    scale = (hi - lo) / 255.0 or 1.0  # an all-zero tensor: any scale reproduces it
    zero_point = round(-lo / scale)
    q = np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(np.uint8)
    return Quantized(q, scale, zero_point)


def dequantize(q: Quantized) -> np.ndarray:
    return ((q.values.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)).astype(np.float32)


def int8_bytes(numel: int) -> int:
    """Bytes on the wire for a tensor of ``numel`` values sent int8."""
    return numel + PARAMETER_BYTES
