"""The browser app at ``/app/`` (and ``GET /`` sends a browser there): static files built from web/
(Vite, onnxruntime-web).

Open to everyone, like a web page: the page asks for API keys itself (a device key for the OTA
model, a predict key for the cloud) and sends them only to the API routes. The service worker is
served uncached so a new build reaches browsers at once; hashed assets are immutable.

Every answer under ``/app`` carries ``HEADERS`` (added by server/headers.py): a Content-Security-Policy
that lets the page run only its own files. No inline script and no eval: ``'wasm-unsafe-eval'``
alone lets onnxruntime-web and OpenCV.js compile their WebAssembly (OpenCV.js's run-time code
generation is patched out at build time, web/scripts/opencv-csp.mjs). ``connect-src 'self'``: the
page talks to this server only. ``blob:`` images are the photo preview; the webcam's stream needs no
source (``srcObject``). The page cannot be framed, and has no base, plugin or form targets.

The page is cross-origin isolated (``Cross-Origin-Opener-Policy: same-origin`` and
``Cross-Origin-Embedder-Policy: require-corp``): browsers give SharedArrayBuffer, which
onnxruntime-web's WASM threads need, only to such a page. It costs nothing here: the page loads its
own files only, and opens no other window that it would talk to.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from tandem.server.endpoint import CALL, call_of
from tandem.server.responses import json_response
from tandem.settings import ServerSettings

log = logging.getLogger(__name__)

PACKAGED = Path(__file__).resolve().parents[1] / "webapp"
PREFIX = "/app"

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY", "cross-origin-opener-policy": "same-origin",
           "cross-origin-embedder-policy": "require-corp"}


class _AppFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if path.startswith("assets/"):
            response.headers["cache-control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["cache-control"] = "no-cache"
        return response


def _named(app: ASGIApp, route: str) -> ASGIApp:
    """``app`` with the access log's and the metrics' route name set: a mount is not an endpoint()."""
    async def named(scope: Scope, receive: Receive, send: Send) -> None:
        call = scope.get(CALL)
        if call is not None:
            call.route = route
        await app(scope, receive, send)
    return named


def routes(settings: ServerSettings) -> list[BaseRoute]:
    directory = settings.web_dir or PACKAGED
    def slash(request: Request) -> Response:
        call_of(request).route = PREFIX
        return RedirectResponse(PREFIX + "/", 308)

    def root(request: Request) -> Response:
        # A person who types the server's address gets the page; the API lives under /v1 and /v2.
        # Temporary (307): a browser does not remember it, should "/" ever answer something else.
        call_of(request).route = "/"
        return RedirectResponse(PREFIX + "/", 307)

    to_slash = Route(PREFIX, slash, methods=["GET", "HEAD"])
    to_app = Route("/", root, methods=["GET", "HEAD"])
    if not (directory / "index.html").is_file():
        log.warning("the browser app is not built (%s has no index.html): /app/ answers 404", directory)
        async def not_built(scope: Scope, receive: Receive, send: Send) -> None:
            # The folder is the server's business, not the visitor's: the log above names it.
            message = ("the browser app is not built on this server: its operator runs `make install`, which "
                       "builds web/ with npm, or sets TANDEM_WEB_DIR to a built copy")
            await json_response({"error": message}, 404)(scope, receive, send)
        return [to_app, to_slash, Mount(PREFIX, app=_named(not_built, PREFIX + "/{path}"))]
    return [to_app, to_slash, Mount(PREFIX, app=_named(_AppFiles(directory=directory, html=True), PREFIX + "/{path}"))]

