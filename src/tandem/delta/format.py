"""The TDP1 container: the fixed header and the length-prefixed sections that follow it.

The layout is documented in the package docstring (tandem/delta/__init__.py). Everything read here
is bounds-checked: a short, long or inconsistent patch raises PatchError, never IndexError or
struct.error, and no length is believed beyond the caps below.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from tandem.delta import compress
from tandem.errors import ChecksumError, PatchError

MAGIC = b"TDP1"
KIND_BYTES = 1
KIND_ONNX = 2
KINDS = {KIND_BYTES: "bytes", KIND_ONNX: "onnx"}
# An ONNX file without external data is one protobuf message, which cannot exceed 2 GiB; bundle
# files are far smaller. Nothing a patch declares is allowed past this.
MAX_FILE = (1 << 31) - 1

_HEADER = struct.Struct("<4sB3sQ32sQ32s")
HEADER_SIZE = _HEADER.size  # 88
_SECTION = struct.Struct("<QQ")


@dataclass(frozen=True)
class Header:
    kind: int
    source_size: int
    source_sha256: bytes
    target_size: int
    target_sha256: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, self.kind, b"\0\0\0", self.source_size, self.source_sha256,
                            self.target_size, self.target_sha256)

    @classmethod
    def describe(cls, kind: int, old: bytes, new: bytes) -> Header:
        return cls(kind, len(old), hashlib.sha256(old).digest(), len(new), hashlib.sha256(new).digest())

    def check_source(self, old: bytes) -> None:
        if len(old) != self.source_size or hashlib.sha256(old).digest() != self.source_sha256:
            raise ChecksumError(
                f"this patch applies to a {self.source_size}-byte file with sha256 {self.source_sha256.hex()[:12]}…, "
                f"not to the installed {len(old)}-byte file with sha256 {hashlib.sha256(old).hexdigest()[:12]}…; "
                "download the full file instead")

    def check_target(self, out: bytes) -> None:
        if len(out) != self.target_size or hashlib.sha256(out).digest() != self.target_sha256:
            raise ChecksumError(
                f"the patch rebuilt a {len(out)}-byte file with sha256 {hashlib.sha256(out).hexdigest()[:12]}…, "
                f"but promised {self.target_size} bytes with sha256 {self.target_sha256.hex()[:12]}…; "
                "the patch is corrupt: download the full file instead")


def read_header(patch: bytes, max_size: int = MAX_FILE) -> Header:
    if len(patch) < HEADER_SIZE:
        raise PatchError(f"a TDP1 patch starts with a {HEADER_SIZE}-byte header; this one has {len(patch)} bytes in all")
    magic, kind, reserved, src_size, src_sha, dst_size, dst_sha = _HEADER.unpack_from(patch)
    if magic != MAGIC:
        raise PatchError(f"not a Tandem delta patch (starts with {magic!r}, expected {MAGIC!r})")
    if kind not in KINDS or reserved != b"\0\0\0":
        raise PatchError(f"unknown TDP1 patch kind {kind} (or reserved bytes set); this Tandem reads "
                         f"{', '.join(KINDS.values())}: update the SDK or download the full file")
    cap = min(max_size, MAX_FILE)
    if src_size > cap or dst_size > cap:
        raise PatchError(f"the patch declares a {max(src_size, dst_size)}-byte file, over the {cap}-byte limit")
    return Header(kind, src_size, src_sha, dst_size, dst_sha)


def section(data: bytes, dictionary: bytes = b"") -> bytes:
    """``raw length | stored length | zstd frame``."""
    stored = compress.compress(data, dictionary)
    return _SECTION.pack(len(data), len(stored)) + stored


class Sections:
    """Reads the sections after the header, one by one, each at most ``limit`` bytes raw."""

    def __init__(self, patch: bytes, limit: int) -> None:
        self.patch = memoryview(patch)
        self.pos = HEADER_SIZE
        self.limit = limit

    def next(self, what: str, dictionary: bytes = b"") -> bytes:
        if len(self.patch) - self.pos < _SECTION.size:
            raise PatchError(f"the patch is truncated: its {what} section is missing; download it again")
        raw_len, stored_len = _SECTION.unpack_from(self.patch, self.pos)
        self.pos += _SECTION.size
        if raw_len > self.limit:
            raise PatchError(f"the patch's {what} section declares {raw_len} bytes, over the {self.limit}-byte limit")
        if stored_len > len(self.patch) - self.pos:
            raise PatchError(f"the patch is truncated inside its {what} section; download it again")
        stored = bytes(self.patch[self.pos : self.pos + stored_len])
        self.pos += stored_len
        return compress.decompress(stored, raw_len, dictionary, what)

    def finish(self) -> None:
        if self.pos != len(self.patch):
            raise PatchError(f"the patch has {len(self.patch) - self.pos} unexpected bytes after its last section")
