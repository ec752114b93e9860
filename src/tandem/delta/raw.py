"""Byte-level patches (TDP1 kind ``bytes``): zstd's patch-from mode.

The new file is compressed with the whole old file as a raw-content dictionary, so every run it
shares with the old one (anywhere in it, thanks to a window that spans both) costs a few bytes of
match description, and what is new is compressed as usual. Good for files with no structure
Tandem knows: manifests, the celebmatch gallery, anything an app adds.
"""

from __future__ import annotations

from tandem.delta.format import KIND_BYTES, Header, Sections, section


def diff(old: bytes, new: bytes) -> bytes:
    return Header.describe(KIND_BYTES, old, new).pack() + section(new, old)


def apply(old: bytes, patch: bytes, header: Header) -> bytes:
    sections = Sections(patch, limit=header.target_size)
    out = sections.next("file bytes", old)
    sections.finish()
    return out
