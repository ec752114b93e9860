"""zstd both ways, with decompression bounded by the length a patch declares.

A patch comes over the network, so nothing it says is trusted: a zstd frame may claim any content
size, and a small frame may expand to gigabytes. Decompression here reads in chunks and stops one
byte past the declared length, so memory grows only with output that is really there and never
beyond what the caller allowed.
"""

from __future__ import annotations

import zstandard as zstd

from tandem.errors import PatchError

LEVEL = 19  # patches are made once on the server and fetched by many devices: spend the CPU there
_CHUNK = 1 << 20


def window_log(*sizes: int) -> int:
    """A zstd window that reaches across the dictionary and the output, so patch-from can copy
    from anywhere in the old file (zstd's limit is 2^31 on 64-bit machines)."""
    return min(31, max(20, sum(sizes).bit_length()))


def compress(data: bytes, dictionary: bytes = b"", level: int = LEVEL) -> bytes:
    if dictionary:
        params = zstd.ZstdCompressionParameters.from_level(
            level, source_size=len(data), dict_size=len(dictionary), window_log=window_log(len(dictionary), len(data)),
            enable_ldm=1, write_checksum=0, write_content_size=1)
        cdict = zstd.ZstdCompressionDict(dictionary, dict_type=zstd.DICT_TYPE_RAWCONTENT)
        return zstd.ZstdCompressor(dict_data=cdict, compression_params=params).compress(data)
    return zstd.ZstdCompressor(level=level, write_checksum=False).compress(data)


def decompress(data: bytes, length: int, dictionary: bytes = b"", what: str = "section") -> bytes:
    """Exactly ``length`` bytes out of the zstd frame ``data``, or PatchError."""
    try:
        cdict = zstd.ZstdCompressionDict(dictionary, dict_type=zstd.DICT_TYPE_RAWCONTENT) if dictionary else None
        d = zstd.ZstdDecompressor(dict_data=cdict, max_window_size=1 << window_log(len(dictionary), length))
        parts: list[bytes] = []
        got = 0
        with d.stream_reader(data, read_across_frames=False) as reader:
            while got <= length:
                chunk = reader.read(min(_CHUNK, length + 1 - got))
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
    except zstd.ZstdError as e:
        raise PatchError(f"the patch's {what} is not a valid zstd frame ({e}); download the patch again") from e
    if got != length:
        raise PatchError(
            f"the patch's {what} decompresses to {'more than' if got > length else 'only'} "
            f"{length if got > length else got} bytes, its header says {length}; download the patch again")
    return b"".join(parts)
