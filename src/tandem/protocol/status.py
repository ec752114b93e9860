"""HTTP statuses and TandemErrors, both ways.

Each TandemError carries the status it means (``status_code``, tandem.errors): the server answers
with it (tandem.server.responses). A client reading a refusal turns the status back into the
matching error here, so that an app catches ``NotFound`` or ``RateLimited`` whichever client of
Tandem's (the inference client, the OTA client) met it.
"""

from __future__ import annotations

import math

from tandem.errors import (
    Forbidden,
    InvalidRequest,
    NoFaceFound,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    TandemError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from tandem.protocol import jsonbody

# A refusal's status → the error that the server raised to give it.
ERRORS: dict[int, type[TandemError]] = {
    cls.status_code: cls
    for cls in (InvalidRequest, Unauthenticated, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType,
                NoFaceFound, RequestTimeout)
}


def error_for(status: int, message: str, retry_after: float | None = None) -> TandemError:
    """The TandemError for a refusal with ``status``: the table above; 429 ``RateLimited`` and any
    other 5xx ``Unavailable``, each with the server's ``retry_after`` (else 1 s); any other 4xx
    ``InvalidRequest``; anything else (a redirect no client follows) ``Unavailable``."""
    if status == RateLimited.status_code:
        return RateLimited(message, retry_after or 1.0)
    cls = ERRORS.get(status)
    if cls is not None:
        return cls(message)
    if 400 <= status < 500:
        return InvalidRequest(message)
    return Unavailable(message, retry_after or 1.0)


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds); None when absent or not a finite number ≥ 0."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def error_message(body: bytes) -> str | None:
    """The server's message in a refusal's ``{"error": "..."}`` body; None when it has none."""
    try:
        parsed = jsonbody.loads(body)
    except ValueError:
        return None
    message = parsed.get("error") if isinstance(parsed, dict) else None
    return message if isinstance(message, str) and message else None
