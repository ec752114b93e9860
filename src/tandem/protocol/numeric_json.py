"""OIP JSON requests whose tensor numbers go straight into numpy (simdjson), never through Python lists.

A 100×75×3 photo sent as OIP JSON is 22,500 numbers: orjson makes 22,500 Python ints of them and numpy then
reads them back one at a time, about 0.8 ms a request on this CPU, more than the rest of the HTTP stack
together (bench/results/serving.json, ``stack_profile``). simdjson (pysimdjson, in the server's ``serve``
extra) checks the whole text as strictly as orjson does and hands a flat list of numbers over as one buffer
(``Array.as_buffer``), in about a third of the time.

Only what it can hand over exactly takes this path: every input's ``data`` a flat list of numbers of the kind
its declared datatype holds. ``as_buffer`` would flatten a nested list, even a ragged one the general path
refuses, so flatness is proven on the text: a ``[`` in JSON opens an array or sits in a string, so when no
string holds one, the text's ``[`` count is the number of arrays, and it must equal those seen outside the
data plus one per data list. A nested list, booleans, fractions for an integer type, a number out of
range, duplicate keys, a malformed text or a small one all give None, and the caller parses the text with
orjson as before, so every answer and every error message stays that of
:func:`tandem.protocol.tensors.from_json_values`.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np

try:
    import simdjson
except ImportError:  # the device SDK's base install, and any install without the serve extra
    simdjson = None  # type: ignore[assignment]

# Below this many bytes orjson's lists cost less than a simdjson parser (a binary request's JSON header, a
# handful of numbers).
MIN_BYTES = 4096

# as_buffer's element kinds by the OIP datatype's numpy kind: unsigned and signed 64-bit integers, doubles.
_BUFFER: dict[str, tuple[Literal["u", "i", "d"], type[np.generic]]] = {
    "u": ("u", np.uint64), "i": ("i", np.int64), "f": ("d", np.float64)}
_KIND = {"UINT8": "u", "UINT16": "u", "UINT32": "u", "UINT64": "u", "INT8": "i", "INT16": "i", "INT32": "i",
         "INT64": "i", "FP16": "f", "FP32": "f", "FP64": "f"}


def parse_request(raw: bytes | memoryview) -> Any | None:
    """The JSON value of ``raw``, an OIP inference request, with each input's flat ``data`` list a numpy array
    (uint64, int64 or float64 by its datatype's kind); None when simdjson is not installed, the text is small,
    or anything in it is not for this path (see the module's doc): parse it with jsonbody then."""
    if simdjson is None or len(raw) < MIN_BYTES:
        return None
    text = bytes(raw)
    try:
        doc = _parse(text)
        if not isinstance(doc, simdjson.Object):
            return None
        req = _request(doc)
    except Exception:  # _NotHere, or malformed or too deep (simdjson's own errors): orjson's path says what is wrong
        return None
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not all("data" in i for i in inputs):
        return None  # no tensor numbers to gain on (binary inputs): nothing for this path
    arrays = _arrays(req)
    return req if arrays is not None and arrays == text.count(b"[") else None


def _arrays(value: Any) -> int | None:
    """How many JSON arrays ``value`` holds (a numpy array stands for one flat list); None if a string in it
    holds a ``[``, so the text's count of them says nothing."""
    if isinstance(value, np.ndarray):
        return 1
    if isinstance(value, str):
        return None if "[" in value else 0
    if isinstance(value, list | dict):
        count = int(isinstance(value, list))
        for item in (value if isinstance(value, list) else [*value.keys(), *value.values()]):
            inner = _arrays(item)
            if inner is None:
                return None
            count += inner
        return count
    return 0


_local = threading.local()


def _parse(text: bytes) -> Any:
    """simdjson's value of ``text`` from this thread's parser (a new parser per text cost ~35 us of ~300). A parser
    refuses to parse again while objects of its last document live; none should, but if one did, a new parser
    takes over rather than every request falling back to orjson for good."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    try:
        return parser.parse(text)
    except RuntimeError:
        _local.parser = simdjson.Parser()
        return _local.parser.parse(text)


class _NotHere(Exception):
    """Something orjson's general path must parse (duplicate keys, an input's data the buffer cannot hold), found
    before any of it is converted for nothing."""


def _keys(obj: Any) -> list[str]:
    keys = list(obj.keys())
    if len(set(keys)) != len(keys):  # orjson keeps the last of duplicate keys; say nothing different
        raise _NotHere()
    return keys


def _request(doc: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _keys(doc):
        value = doc[key]
        out[key] = [_input(v) for v in value] if key == "inputs" and isinstance(value, simdjson.Array) \
            else _plain(value)
    return out


def _input(item: Any) -> dict[str, Any]:
    if not isinstance(item, simdjson.Object):
        raise _NotHere()
    keys = _keys(item)
    datatype = item["datatype"] if "datatype" in keys else None
    return {k: _numbers(item[k], datatype) if k == "data" else _plain(item[k]) for k in keys}


def _numbers(value: Any, datatype: Any) -> np.ndarray:
    """``value`` as a numpy array when it is a list of numbers of ``datatype``'s kind (nested too: parse_request
    then refuses it by its count of arrays); _NotHere else, before a long list is made of it for nothing."""
    kind = _KIND.get(datatype) if isinstance(datatype, str) else None
    if kind is None or not isinstance(value, simdjson.Array):
        raise _NotHere()
    of_type, dtype = _BUFFER[kind]
    try:
        return np.frombuffer(value.as_buffer(of_type=of_type), dtype=dtype)
    except (TypeError, ValueError):  # booleans, fractions for an integer type, a number out of range
        raise _NotHere() from None


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        _keys(value)
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value
