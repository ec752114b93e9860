"""The image endpoint: ``POST /v1/apps/{app}/{model}:predict`` with a photo as the body: JPEG, PNG,
WebP, GIF or BMP (the formats the decoder reads, tandem.bundle.preprocess.FORMATS), sent as its own
media type or as application/octet-stream.

The server applies the bundle's preprocessing, so a phone app sends the photo as it is. This module
checks the route, the reference and the body's type, and delegates to the data plane
(server/dataplane.py), which runs the app (tandem/apps/: classify, celebmatch, any registered one):
decoding and the app's preparation in the worker's bounded decode pool, within the photo budget
(server/photos.py), the model part through the model's batcher (for celebmatch the four views of a
photo, whole face, eyes, nose and mouth, travel as one 4-row request).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem.apps.base import JSON
from tandem.errors import InvalidRequest, NotFound, UnsupportedMediaType, quoted
from tandem.protocol.numbers import is_version
from tandem.server.body import read_body
from tandem.server.dataplane import DataPlane
from tandem.server.endpoint import Call, endpoint
from tandem.server.responses import json_response

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "application/octet-stream")


def _ref(request: Request) -> str | None:
    version, alias = request.query_params.get("version"), request.query_params.get("alias")
    if version is not None and alias is not None:
        raise InvalidRequest("give either ?version= or ?alias=, not both")
    if version is not None and not is_version(version):
        raise InvalidRequest(f"?version={quoted(version)} is not a version number; use ?alias= for an alias")
    if alias is not None and is_version(alias):
        raise InvalidRequest(f"?alias={quoted(alias)} is a version number; use ?version=")
    return version if version is not None else alias


async def _photo(request: Request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {quoted(ctype) if ctype else 'missing'}: send the photo's bytes as image/jpeg, image/png, "
            "image/webp, image/gif, image/bmp or application/octet-stream")
    body = await read_body(request, limit)
    if not body:
        raise InvalidRequest("the body is empty; send the photo's bytes (JPEG, PNG, WebP, GIF or BMP)")
    return body


async def predict(request: Request, call: Call) -> Response:
    plane: DataPlane = request.app.state.services.plane
    app = plane.app(request.path_params["app"])
    name, colon, action = request.path_params["model"].partition(":")
    if not colon or action != "predict":
        raise NotFound(f"the image endpoint is POST /v1/apps/{app.name}/MODEL:predict, not "
                       f"/v1/apps/{app.name}/{quoted(request.path_params['model'])}")
    model = await plane.model(name, _ref(request))
    call.serving(model.name, model.version)
    result = await plane.predict(app, model, request.query_params, lambda limit: _photo(request, limit),
                                 request.headers.get("accept", ""))
    # Server-Timing lets a client (the browser app) show the server's stages inside its round trip.
    headers = ({"server-timing": result.server_timing(), "x-tandem-model": model.name,
                "x-tandem-model-version": str(model.version)} if app.timing_headers else None)
    answer = result.answer
    if answer.media_type == JSON:
        return json_response(answer.body, headers=headers)
    return Response(answer.body, headers=headers, media_type=answer.media_type)


def routes() -> list[Route]:
    path = "/v1/apps/{app}/{model}"
    return [Route(path, endpoint(path + ":predict", "predict", predict), methods=["POST"])]
