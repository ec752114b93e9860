"""Numbers written in URLs (versions, counts in query parameters): ASCII digits only."""

from __future__ import annotations

import re

# str.isdigit also takes '²', which int() refuses.
_DIGITS = re.compile(r"[0-9]+")


def is_version(text: str) -> bool:
    """Whether ``text`` is written as a version number: ASCII digits only."""
    return _DIGITS.fullmatch(text) is not None


def number(text: str) -> int | None:
    """The value of ASCII digits, or None for anything else and for more than 18 significant digits:
    int() raises ValueError on strings of over 4300 digits, and no version or count comes near 10**18."""
    if not is_version(text):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else None
