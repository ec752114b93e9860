"""JSON bodies: orjson where it is installed (the server's ``serve`` extra), the standard library otherwise.

The device SDK's base install has no orjson, and needs none: its bodies are small (a JSON header of
tensor names, or a TF-Serving answer). On the server, parsing ~100 KB of numbers per request costs
more than the model with the standard library, so orjson is used there. Both refuse what JSON is
not (NaN, Infinity) and raise a ``ValueError`` on a malformed text; the callers say whose fault it
was (:func:`request` for what a client sent, :func:`answer` for what a server answered).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tandem.errors import InvalidRequest, Unavailable

try:
    import orjson
except ImportError:  # the device SDK's base install
    orjson = None  # type: ignore[assignment]


def loads(raw: bytes | memoryview | str) -> Any:
    """The value of a JSON text; ``ValueError`` when it is not one."""
    if orjson is not None:
        return orjson.loads(raw)
    return json.loads(bytes(raw) if isinstance(raw, memoryview) else raw, parse_constant=_not_a_number)


def dumps(obj: Any) -> bytes:
    """Compact JSON; numpy arrays and scalars become lists and numbers."""
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_plain).encode()


def request(raw: bytes | memoryview, what: str = "request body") -> Any:
    """A client's JSON: InvalidRequest (400) when it is not JSON."""
    try:
        return loads(raw)
    except ValueError as e:
        raise InvalidRequest(
            f"{what} is not valid JSON ({e}); NaN and Infinity are not JSON numbers either"
        ) from e


def answer(raw: bytes, where: str) -> Any:
    """A server's JSON answer: Unavailable when it is not JSON (a captive portal's HTML page, say)."""
    try:
        return loads(raw)
    except ValueError as e:
        raise Unavailable(f"{where}: the answer is not JSON ({e})") from e


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
