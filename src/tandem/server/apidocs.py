"""The API's documentation page at ``/docs``: Swagger UI over the server's OpenAPI document.

Open to everyone, like the browser app: reading the API's description needs no key (trying a call
does: the page's Authorize button takes one). Swagger UI's files come from the Python package
``swagger-ui-bundle-v2`` (the serve extra), served from this server: the page loads nothing from
elsewhere. It reads the document at ``/docs/openapi.json``, the one ``/openapi.json`` gives to keys.

Every answer under ``/docs`` carries ``HEADERS``: a Content-Security-Policy in the browser app's
style (webapp.py) — scripts from this server only, no inline script and no eval, no framing. Swagger
UI sets inline style attributes and draws icons from ``data:`` URIs, which the policy allows for
styles and images alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from tandem.errors import NotFound, quoted
from tandem.server.endpoint import Call, endpoint
from tandem.server.responses import json_response

log = logging.getLogger(__name__)

PREFIX = "/docs"
# Swagger UI's files the page uses, and nothing else of the package (its demo page points elsewhere).
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
INIT = "init.js"

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY"}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tandem inference server: API</title>
<link rel="stylesheet" href="{PREFIX}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{PREFIX}/swagger-ui-bundle.js"></script>
<script src="{PREFIX}/{INIT}"></script>
</body>
</html>
"""

# A file, not an inline script: the policy runs only this server's files.
INIT_JS = f"""window.ui = SwaggerUIBundle({{
  url: "{PREFIX}/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  validatorUrl: null
}});
"""


def _bundle() -> Path | None:
    """Swagger UI's folder in the installed package, None without it."""
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]  # the serve extra's swagger-ui-bundle-v2
    except ImportError:
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    return path if all((path / name).is_file() for name in ASSETS) else None


def routes(document: Callable[[], dict[str, Any]]) -> list[Route]:
    """``document``: the OpenAPI document the page shows."""
    bundle = _bundle()
    if bundle is None:
        log.warning("Swagger UI is not installed (pip install 'tandem[serve]'): /docs answers 404")

    def installed() -> Path:
        if bundle is None:
            raise NotFound("the API documentation page needs Swagger UI, which is not installed on this server: "
                           "its operator installs tandem[serve] (swagger-ui-bundle-v2); /openapi.json is there")
        return bundle

    async def page(request: Request, call: Call) -> Response:
        installed()
        return HTMLResponse(PAGE, headers={"cache-control": "no-cache"})

    async def spec(request: Request, call: Call) -> Response:
        return json_response(document())

    async def asset(request: Request, call: Call) -> Response:
        name = request.path_params["file"]
        if name == INIT:
            return Response(INIT_JS, media_type="text/javascript", headers={"cache-control": "no-cache"})
        if name not in ASSETS:
            raise NotFound(f"no file {quoted(name)} under {PREFIX}/; the page is {PREFIX}")
        # Named by the package's version folder: a new version is a new install, so a day's caching is safe.
        return FileResponse(installed() / name, media_type=ASSETS[name], headers={"cache-control": "max-age=86400"})

    return [
        Route(PREFIX, endpoint(PREFIX, None, page), methods=["GET"]),
        Route(PREFIX + "/openapi.json", endpoint(PREFIX + "/openapi.json", None, spec), methods=["GET"]),
        Route(PREFIX + "/{file}", endpoint(PREFIX + "/{file}", None, asset), methods=["GET"]),
    ]
