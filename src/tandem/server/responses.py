"""JSON bodies (orjson) and the one place where a TandemError becomes an HTTP answer."""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response

from tandem.errors import Forbidden, RateLimited, TandemError, Unauthenticated, Unavailable

JSON = "application/json"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON)


def error_response(e: TandemError) -> Response:
    """``{"error": message}`` with the error's status, and the headers its status calls for."""
    headers: dict[str, str] = {}
    if isinstance(e, Unauthenticated):
        # RFC 6750: a request without credentials gets the bare challenge, a bad token the reason.
        headers["www-authenticate"] = getattr(e, "challenge", 'Bearer realm="tandem"')
    elif isinstance(e, Forbidden) and getattr(e, "challenge", None):
        # Only a refusal for the key's scope is a Bearer challenge; others (an OTA data key for a version
        # the device is not offered) are not about the key.
        headers["www-authenticate"] = e.challenge  # type: ignore[attr-defined]
    if isinstance(e, RateLimited | Unavailable):
        # Retry-After takes whole seconds; round up so that a client retrying on time gets a token.
        headers["retry-after"] = str(max(1, math.ceil(e.retry_after)))
    return json_response({"error": str(e)}, e.status_code, headers)
