"""JSON bodies (orjson) and the one place where a TandemError becomes an HTTP answer."""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.responses import Response

from tandem.errors import (
    Forbidden,
    NoFaceFound,
    RateLimited,
    TandemError,
    Unauthenticated,
    Unavailable,
    without_paths,
)
from tandem.settings import Settings

JSON = "application/json"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON)


def hidden_places(settings: Settings) -> dict[str, Path]:
    """The server's folders that an HTTP answer never shows (error_response names them instead)."""
    return _places(settings.home, settings.web_dir, settings.data_home)


@functools.lru_cache(maxsize=8)
def _places(home: Path, web_dir: Path | None, data_home: Path | None) -> dict[str, Path]:
    from tandem.server.webapp import PACKAGED  # webapp imports this module

    places = {"TANDEM_HOME": home, "TANDEM_WEB_DIR": web_dir or PACKAGED, "TANDEM_DATA_HOME": data_home,
              "tandem": Path(__file__).resolve().parents[1], "TMPDIR": Path(tempfile.gettempdir()),
              "~": Path.home()}
    return {name: p for name, p in places.items() if p is not None and str(p).rstrip("/")}


def error_response(e: TandemError, hide: Mapping[str, Path] | None = None) -> Response:
    """``{"error": message}`` with the error's status, and the headers its status calls for.

    ``hide``: folders (name → path, see hidden_places) whose paths the message must not show: a
    message written for the CLI may name a file under TANDEM_HOME; a visitor sees ``TANDEM_HOME/…``."""
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
    if isinstance(e, NoFaceFound):
        e = e.with_skip("?detect=false")  # HTTP's way to skip finding the face, not the CLI's --no-detect
    message = without_paths(str(e), hide) if hide else str(e)
    return json_response({"error": message}, e.status_code, headers)
