"""Open Inference Protocol v2 (KServe v2) over HTTP: health, metadata, readiness and infer, and
Triton's extensions to it: model configuration, statistics and classification.

What Triton and KServe speak, so their clients (tritonclient.http) work unchanged. The codec
(tandem.protocol.oip) parses and writes the bodies; this module only routes, checks and delegates.
Statistics are this worker's (server/statistics.py), as a model's state is.
"""

from __future__ import annotations

import time

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import tandem
from tandem.protocol import classification
from tandem.protocol import oip as oip_codec
from tandem.server.batching import Tensors
from tandem.server.body import read_body
from tandem.server.dataplane import DataPlane
from tandem.server.endpoint import Call, endpoint
from tandem.server.pool import LoadedModel
from tandem.server.responses import json_response

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics"]


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
    t0 = time.perf_counter()
    content, headers = oip_codec.encode_infer_response(
        model.name, model.version, req.id, [(o, _answer(model, o, result[o.name])) for o in req.outputs])
    model.stats.answered(time.perf_counter() - t0)
    return Response(content, headers=headers)


def _answer(model: LoadedModel, output: oip_codec.RequestedOutput, arr: np.ndarray) -> np.ndarray:
    """The output as asked for: the array, or its top K classes (the classification extension), named
    by the bundle's labels when the output has a score per label."""
    if output.classification is None:
        return arr
    labels = model.bundle.manifest.labels
    return classification.top_k(arr, output.classification, labels if arr.shape[-1] == len(labels) else ())


async def model_config(request: Request, call: Call) -> Response:
    model = await _model(request, call)
    settings = request.app.state.services.settings
    return json_response(oip_codec.model_config(model.name, PLATFORM, settings.max_batch_size, model.inputs,
                                                model.outputs, round(settings.max_delay_ms * 1000)))


async def model_stats(request: Request, call: Call) -> Response:
    """One version's statistics (``/versions/V``), else those of every version of it this worker holds."""
    model = await _model(request, call)
    served = [model] if "version" in request.path_params else _plane(request).loaded(model.name)
    return json_response({"model_stats": [m.stats.json(m.name, m.version) for m in served]})


async def all_stats(request: Request, call: Call) -> Response:
    """Every model version this worker holds."""
    return json_response({"model_stats": [m.stats.json(m.name, m.version) for m in _plane(request).loaded()]})


def routes() -> list[Route]:
    m = "/v2/models/{name}"
    v = "/v2/models/{name}/versions/{version}"
    return [
        # Infer first: Starlette tries the routes in order, and infer is the hot path.
        *(Route(p + "/infer", endpoint(p + "/infer", "predict", infer), methods=["POST"]) for p in (m, v)),
        Route("/v2/health/live", endpoint("/v2/health/live", None, live), methods=["GET"]),
        Route("/v2/health/ready", endpoint("/v2/health/ready", None, ready), methods=["GET"]),
        Route("/v2", endpoint("/v2", "predict", server_metadata), methods=["GET"]),
        # Before /v2/models/{name}, which would take "stats" for a model's name (as Triton's routes do).
        Route("/v2/models/stats", endpoint("/v2/models/stats", "predict", all_stats), methods=["GET"]),
        *(Route(p, endpoint(p, "predict", model_metadata), methods=["GET"]) for p in (m, v)),
        *(Route(p + "/ready", endpoint(p + "/ready", "predict", model_ready), methods=["GET"]) for p in (m, v)),
        *(Route(p + "/config", endpoint(p + "/config", "predict", model_config), methods=["GET"]) for p in (m, v)),
        *(Route(p + "/stats", endpoint(p + "/stats", "predict", model_stats), methods=["GET"]) for p in (m, v)),
    ]
