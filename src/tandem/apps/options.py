"""Apps' options from a request's query parameters, checked with errors that say what is expected."""

from __future__ import annotations

from collections.abc import Mapping

from tandem.errors import InvalidRequest, quoted
from tandem.protocol.numbers import number

MAX_TOP_K = 100


def whole_number(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    value = number(raw)
    if value is None or not lo <= value <= hi:
        raise InvalidRequest(f"query parameter {name}={quoted(raw, 40)}: expected a whole number from {lo} to {hi}")
    return value


def flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
    if value is None:
        raise InvalidRequest(f"query parameter {name}={quoted(raw, 40)}: expected true or false")
    return value
