"""TensorFlow Serving's REST API: ``:predict`` (row and columnar formats), ``:classify`` (a model
with a label per score), model status and ``/metadata`` (the signatures).

The action is part of the last path segment (``/v1/models/faces:predict``), so each route takes
that segment whole and splits it at the colon. One Starlette route serves two resources (status:
GET and HEAD; ``:predict``: POST), so the methods each allows are told apart here, ``Allow`` included.
"""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tandem.errors import InvalidRequest, NotFound, quoted
from tandem.protocol import tfserving as tfserving_codec
from tandem.protocol.datatypes import TensorSig
from tandem.protocol.numbers import is_version
from tandem.server.body import read_body
from tandem.server.dataplane import DataPlane
from tandem.server.endpoint import Call, Handler, endpoint
from tandem.server.pool import LoadedModel
from tandem.server.responses import json_response

UNSUPPORTED = ("regress",)
ACTIONS = ("predict", "classify")
STATUS_METHODS = ("GET", "HEAD")
PREDICT_METHODS = ("POST",)


def _split(segment: str) -> tuple[str, str | None]:
    value, colon, action = segment.partition(":")
    return value, (action if colon else None)


def _version_ref(segment: str) -> tuple[str, str | None]:
    version, action = _split(segment)
    if not is_version(version):
        raise InvalidRequest(f"version {quoted(version)} is not a version number; use /labels/ALIAS for an alias")
    return version, action


def _label_ref(segment: str) -> tuple[str, str | None]:
    label, action = _split(segment)
    if is_version(label):
        raise InvalidRequest(f"label {quoted(label)} is a version number; use /versions/{label}")
    return label, action


async def by_name(request: Request, call: Call) -> Response:
    name, action = _split(request.path_params["name"])
    return await _dispatch(request, call, name, None, action)


async def by_version(request: Request, call: Call) -> Response:
    ref, action = _version_ref(request.path_params["version"])
    return await _dispatch(request, call, request.path_params["name"], ref, action)


async def by_label(request: Request, call: Call) -> Response:
    ref, action = _label_ref(request.path_params["label"])
    return await _dispatch(request, call, request.path_params["name"], ref, action)


def _allowed(segment: str) -> tuple[str, ...] | None:
    """The methods the resource named by the route's last segment takes; None: an unknown action,
    which the handler refuses whatever the method."""
    action = _split(segment)[1]
    if action is None:
        return STATUS_METHODS
    return PREDICT_METHODS if action in ACTIONS else None


def _not_allowed(method: str, allowed: tuple[str, ...]) -> Response:
    hint = ("POST needs an action: /v1/models/NAME:predict" if allowed == STATUS_METHODS
            else ":predict and :classify take POST")
    return json_response({"error": f"{method} is not allowed here; {hint}"}, 405, {"allow": ", ".join(allowed)})


async def _dispatch(request: Request, call: Call, name: str, ref: str | None, action: str | None) -> Response:
    if action is None:
        if request.method not in STATUS_METHODS:
            return _not_allowed(request.method, STATUS_METHODS)
        return await _status(request, call, name, ref)  # HEAD: the same answer, uvicorn drops the body
    if action in UNSUPPORTED:
        raise InvalidRequest(f":{action} is not supported; use :predict (or :classify for a classifier)")
    if action not in ACTIONS:
        raise NotFound(f"unknown action {quoted(action)}; TF-Serving's REST API here has :predict and :classify")
    if request.method not in PREDICT_METHODS:
        return _not_allowed(request.method, PREDICT_METHODS)
    call.route += ":" + action
    if action == "classify":
        return await _classify(request, call, name, ref)
    return await _predict(request, call, name, ref)


def _plane(request: Request) -> DataPlane:
    return request.app.state.services.plane


async def _model(request: Request, call: Call, name: str, ref: str | None) -> LoadedModel:
    model = await _plane(request).model(name, ref)
    call.serving(model.name, model.version)
    return model


async def _status(request: Request, call: Call, name: str, ref: str | None) -> Response:
    """The version the reference serves; for the model alone, the one a request without a version gets
    (TF-Serving's newest AVAILABLE version), whichever worker answers: not the versions this worker
    happens to have loaded by number."""
    model = await _model(request, call, name, ref)
    return json_response(tfserving_codec.encode_status([model.version]))


async def _predict(request: Request, call: Call, name: str, ref: str | None) -> Response:
    model = await _model(request, call, name, ref)
    outputs, rows = await _plane(request).infer(model, lambda limit: read_body(request, limit),
                                                lambda body: tfserving_codec.parse_predict(body, model.inputs))
    t0 = time.perf_counter()
    content = tfserving_codec.encode_predict(outputs, rows)
    model.stats.answered(time.perf_counter() - t0)  # Triton's statistics count every protocol's requests
    return Response(content, media_type="application/json")


def _scores(model: LoadedModel) -> TensorSig | None:
    """The output a classifier gives its scores in: one per label of the bundle ("probabilities" first)."""
    labels = model.bundle.manifest.labels
    fits = [s for s in model.outputs if labels and len(s.shape) == 2 and s.shape[1] == len(labels)]
    fits.sort(key=lambda s: s.name != "probabilities")
    return fits[0] if fits else None


async def _classify(request: Request, call: Call, name: str, ref: str | None) -> Response:
    model = await _model(request, call, name, ref)
    scores = _scores(model)
    if scores is None:
        raise InvalidRequest(f"{model.label} is not a classifier (no output with a score per label): use :predict")
    outputs, _ = await _plane(request).infer(model, lambda limit: read_body(request, limit),
                                             lambda body: (tfserving_codec.parse_classify(body, model.inputs), None))
    t0 = time.perf_counter()
    content = tfserving_codec.encode_classify(outputs[scores.name], model.bundle.manifest.labels)
    model.stats.answered(time.perf_counter() - t0)
    return Response(content, media_type="application/json")


async def metadata(request: Request, call: Call) -> Response:
    p = request.path_params
    ref = p.get("version", p.get("label"))
    if "version" in p and not is_version(ref or ""):
        raise InvalidRequest(f"version {quoted(ref)} is not a version number; use /labels/ALIAS for an alias")
    if "label" in p and is_version(ref or ""):
        raise InvalidRequest(f"label {quoted(ref)} is a version number; use /versions/{ref}")
    model = await _model(request, call, p["name"], ref)
    return json_response(tfserving_codec.encode_metadata(model.name, model.version, model.inputs, model.outputs,
                                                         _scores(model)))


class _Route(Route):
    """Starlette answers a method no route takes (OPTIONS, PUT, ...) with 405 and ``Allow`` before the
    key check, listing the route's methods: here, those of the resource the last segment names."""

    def __init__(self, path: str, segment: str, handler: Handler) -> None:
        super().__init__(path, endpoint(path, "predict", handler), methods=["GET", "POST"])
        self.segment = segment

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = _allowed(scope["path_params"][self.segment]) or tuple(sorted(self.methods))
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(allowed)})
        await super().handle(scope, receive, send)


def routes() -> list[Route]:
    meta = ("/v1/models/{name}/metadata", "/v1/models/{name}/versions/{version}/metadata",
            "/v1/models/{name}/labels/{label}/metadata")
    return [
        *(Route(p, endpoint(p, "predict", metadata), methods=["GET"]) for p in meta),
        _Route("/v1/models/{name}", "name", by_name),
        _Route("/v1/models/{name}/versions/{version}", "version", by_version),
        _Route("/v1/models/{name}/labels/{label}", "label", by_label),
    ]
