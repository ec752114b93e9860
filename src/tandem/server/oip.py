"""Open Inference Protocol v2 (KServe v2) over HTTP: health, metadata, readiness and infer.

What Triton and KServe speak, so their clients (tritonclient.http) work unchanged. The codec
(tandem.protocol.oip) parses and writes the bodies; this module only routes, checks and delegates.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import tandem
from tandem.errors import Unavailable
from tandem.protocol import oip as oip_codec
from tandem.server.body import read_body
from tandem.server.endpoint import Call, endpoint
from tandem.server.models import LoadedModel
from tandem.server.responses import json_response

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]


async def live(request: Request, call: Call) -> Response:
    return json_response({"live": True})


async def ready(request: Request, call: Call) -> Response:
    pool = request.app.state.services.pool
    settings = request.app.state.services.settings
    last = pool.last_poll_ok
    # Ready while the registry answers: the watcher polls it every alias_poll_s.
    if last is None or time.monotonic() - last > max(5.0, 10 * settings.alias_poll_s):
        raise Unavailable("the model registry has not answered recently; see the server log", retry_after=2)
    return json_response({"ready": True})


async def server_metadata(request: Request, call: Call) -> Response:
    return json_response({"name": "tandem", "version": tandem.__version__, "extensions": EXTENSIONS})


async def _model(request: Request, call: Call) -> LoadedModel:
    p = request.path_params
    model = await request.app.state.services.pool.get(p["name"], p.get("version"), tails=True)
    call.serving(model.name, model.version)
    return model


async def model_metadata(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    registry = request.app.state.services.registry
    versions = await asyncio.to_thread(registry.versions, model.model_name)  # a tail's are its model's
    return json_response({
        "name": model.name,
        "versions": [str(v.version) for v in versions],
        "platform": PLATFORM,
        "inputs": oip_codec.tensor_metadata(model.inputs),
        "outputs": oip_codec.tensor_metadata(model.outputs),
    })


async def model_ready(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    return json_response({"name": model.name, "ready": True})


async def infer(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    services = request.app.state.services
    with model.batcher.slot() as slot:  # tells the batcher this request is on its way
        body = await read_body(request, services.settings.max_body_bytes)
        req = oip_codec.parse_infer_request(
            body, request.headers.get(oip_codec.HEADER_LENGTH), model.inputs, model.outputs, model.int8_inputs)
        result = await slot.submit(req.inputs)
    content, headers = oip_codec.encode_infer_response(
        model.name, model.version, req.id, [(o, result[o.name]) for o in req.outputs])
    return Response(content, headers=headers)


def routes() -> list[Route]:
    m = "/v2/models/{name}"
    v = "/v2/models/{name}/versions/{version}"
    return [
        # Infer first: Starlette tries the routes in order, and infer is the hot path.
        *(Route(p + "/infer", endpoint(p + "/infer", "predict", infer), methods=["POST"]) for p in (m, v)),
        Route("/v2/health/live", endpoint("/v2/health/live", None, live), methods=["GET"]),
        Route("/v2/health/ready", endpoint("/v2/health/ready", None, ready), methods=["GET"]),
        Route("/v2", endpoint("/v2", "predict", server_metadata), methods=["GET"]),
        *(Route(p, endpoint(p, "predict", model_metadata), methods=["GET"]) for p in (m, v)),
        *(Route(p + "/ready", endpoint(p + "/ready", "predict", model_ready), methods=["GET"]) for p in (m, v)),
    ]
