"""Delta patches: rebuild a new file from an old one byte for byte, shipping only what changed.

``diff(old, new, kind)`` makes a patch on the server; ``apply(old, patch)`` rebuilds ``new`` on
the device with numpy and zstandard alone (no onnx, no torch). ``kind`` is ``"onnx"`` for ONNX
model files (a tensor-level diff of the initializers, see tandem.delta.tensors) and ``"bytes"``
for anything else (zstd patch-from, see tandem.delta.raw). An ONNX file that cannot be read at the
protobuf wire level gets a ``bytes`` patch; the header says which kind a patch is.

Patch format TDP1 (all integers little-endian)::

    offset  size  field
    0       4     magic b"TDP1"
    4       1     kind: 1 = bytes, 2 = onnx
    5       3     reserved, zero
    8       8     source size (u64)
    16      32    source sha256 (raw digest)
    48      8     target size (u64)
    56      32    target sha256 (raw digest)
    88      …     sections, each: u64 raw length | u64 stored length | a zstd frame of that many bytes

kind bytes: one section, the target compressed with the whole source file as a raw-content
dictionary.

kind onnx: three sections.
  1. op list (no dictionary), a sequence of
       1 LITERAL  u64 n                          the next n bytes of section 2
       2 COPY     u16 len, name, sha256[32]      the raw_data of the source initializer with that
                                                 name and that sha256
       3 NEW      u8 w, u64 n                    the next n bytes of section 3, un-shuffled
       4 XOR      u8 w, u16 len, name, sha256[32]
                                                 that source initializer's raw_data XOR the next
                                                 len(raw_data) bytes of section 3, un-shuffled
     where un-shuffling with element size w (1, 2, 4, 8) turns w byte planes back into elements.
  2. between-tensor bytes, compressed with the source's between-tensor bytes as a raw-content
     dictionary. A file's "tensors" are the raw_data fields of ModelProto.graph.initializer with at
     least 64 bytes; everything else is between-tensor bytes.
  3. tensor bytes (no dictionary).
  The target is the concatenation of the ops' outputs; every byte of sections 2 and 3 is used.

apply() checks the source's size and sha256 before anything else and the result's after, and
raises tandem.errors.ChecksumError when either differs. A malformed, truncated or oversized patch
raises tandem.errors.PatchError; no length in a patch is trusted beyond the declared target size,
itself capped at 2 GiB - 1 (the protobuf limit), or the ``max_size`` the caller passes.
"""

from __future__ import annotations

from tandem.delta import raw, tensors
from tandem.delta.format import KIND_ONNX, MAX_FILE, read_header
from tandem.delta.onnxwire import WireError
from tandem.errors import PatchError

__all__ = ["apply", "diff", "patch_kind"]


def diff(old: bytes, new: bytes, kind: str) -> bytes:
    """A TDP1 patch that turns ``old`` into ``new``; ``kind`` is "onnx" or "bytes"."""
    if kind not in ("onnx", "bytes"):
        raise ValueError(f"delta kind must be 'onnx' or 'bytes', not {kind!r}")
    if max(len(old), len(new)) > MAX_FILE:
        raise PatchError(f"files over {MAX_FILE} bytes cannot be patched; send the full file")
    if kind == "onnx":
        try:
            return tensors.diff(old, new)
        except WireError:
            pass  # not a protobuf model after all: a byte-level patch still works
    return raw.diff(old, new)


def apply(old: bytes, patch: bytes, max_size: int = MAX_FILE) -> bytes:
    """Rebuild the target of ``patch`` from ``old``, verified against the sha256 in the patch."""
    header = read_header(patch, max_size)
    header.check_source(old)
    out = tensors.apply(old, patch, header) if header.kind == KIND_ONNX else raw.apply(old, patch, header)
    header.check_target(out)
    return out


def patch_kind(patch: bytes) -> str:
    """ "onnx" or "bytes", from the header (PatchError if it is not a TDP1 patch)."""
    return "onnx" if read_header(patch).kind == KIND_ONNX else "bytes"
