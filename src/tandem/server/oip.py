"""Open Inference Protocol v2 (KServe v2) over HTTP: health, metadata, readiness and infer.

What Triton and KServe speak, so their clients (tritonclient.http) work unchanged. The codec
(tandem.protocol.oip) parses and writes the bodies; this module only routes, checks and delegates.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import tandem
from tandem.protocol import oip as oip_codec
from tandem.server.batching import Tensors
from tandem.server.body import read_body
from tandem.server.dataplane import DataPlane
from tandem.server.endpoint import Call, endpoint
from tandem.server.pool import LoadedModel
from tandem.server.responses import json_response

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]


async def live(request: Request, call: Call) -> Response:
    return json_response({"live": True})


async def ready(request: Request, call: Call) -> Response:
    _plane(request).check_ready()
    return json_response({"ready": True})


async def server_metadata(request: Request, call: Call) -> Response:
    return json_response({"name": "tandem", "version": tandem.__version__, "extensions": EXTENSIONS})


def _plane(request: Request) -> DataPlane:
    return request.app.state.services.plane


async def _model(request: Request, call: Call) -> LoadedModel:
    p = request.path_params
    model = await _plane(request).model(p["name"], p.get("version"), tails=True)
    call.serving(model.name, model.version)
    return model


async def model_metadata(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    versions = await _plane(request).versions(model)
    return json_response({
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": oip_codec.tensor_metadata(model.inputs),
        "outputs": oip_codec.tensor_metadata(model.outputs),
    })


async def model_ready(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    return json_response({"name": model.name, "ready": True})


async def infer(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    header_length = request.headers.get(oip_codec.HEADER_LENGTH)

    def decode(body: bytes) -> tuple[Tensors, oip_codec.InferRequest]:
        req = oip_codec.parse_infer_request(body, header_length, model.inputs, model.outputs, model.int8_inputs)
        return req.inputs, req

    result, req = await _plane(request).infer(model, lambda limit: read_body(request, limit), decode)
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
