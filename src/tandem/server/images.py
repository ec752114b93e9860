"""The image endpoint: ``POST /v1/apps/{app}/{model}:predict`` with a JPEG or PNG as the body.

The server applies the bundle's preprocessing, so a phone app sends the photo as it is. Decoding
and face finding run in the worker's bounded decode pool, within the photo budget (server/photos.py); the model part goes through the model's batcher (for
celebmatch the four views of a photo, whole face, eyes, nose and mouth, travel as one 4-row request).
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem.apps.celebmatch.gallery import APP as CELEBMATCH
from tandem.apps.celebmatch.matcher import FacePixels
from tandem.errors import InvalidRequest, NotFound, UnsupportedMediaType, quoted
from tandem.preprocess import to_input
from tandem.server.body import read_body
from tandem.server.endpoint import Call, endpoint
from tandem.server.models import LoadedModel, is_version, number
from tandem.server.photos import Budget, Cancelled, DecodePool, decode
from tandem.server.responses import json_response

CLASSIFY = "classify"
APPS = (CELEBMATCH, CLASSIFY)
IMAGE_TYPES = ("image/jpeg", "image/png", "application/octet-stream")
MAX_TOP_K = 100


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = number(raw)
    if value is None or not lo <= value <= hi:
        raise InvalidRequest(f"query parameter {name}={quoted(raw, 40)}: expected a whole number from {lo} to {hi}")
    return value


def _bool_param(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
    if value is None:
        raise InvalidRequest(f"query parameter {name}={quoted(raw, 40)}: expected true or false")
    return value


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
            f"Content-Type {quoted(ctype) if ctype else 'missing'}: send the photo's bytes as image/jpeg, image/png or "
            "application/octet-stream")
    body = await read_body(request, limit)
    if not body:
        raise InvalidRequest("the body is empty; send the photo's bytes (JPEG or PNG)")
    return body


async def predict(request: Request, call: Call) -> Response:
    app = request.path_params["app"]
    name, colon, action = request.path_params["model"].partition(":")
    if app not in APPS:
        raise NotFound(f"unknown app {quoted(app)}; apps: {', '.join(APPS)}")
    if not colon or action != "predict":
        raise NotFound(f"the image endpoint is POST /v1/apps/{app}/MODEL:predict, not "
                       f"/v1/apps/{app}/{quoted(request.path_params['model'])}")
    services = request.app.state.services
    model = await services.pool.get(name, _ref(request))
    call.serving(model.name, model.version)
    settings = services.settings
    spec = model.bundle.manifest.preprocessing
    budget = Budget.for_model(spec.height, spec.width, settings.decode_max_pixels, settings.decode_max_bytes)
    if app == CELEBMATCH:
        return await _celebmatch(request, model, settings.max_body_bytes, services.photos, budget)
    return await _classify(request, model, settings.max_body_bytes, services.photos, budget)


async def _classify(request: Request, model: LoadedModel, limit: int, photos: DecodePool, budget: Budget) -> Response:
    top_k = _int_param(request, "top_k", 5, 1, MAX_TOP_K)
    spec = model.bundle.manifest.preprocessing
    with model.batcher.slot() as slot:
        photo = await _photo(request, limit)
        pixels = await photos.run(lambda cancelled: to_input(decode(photo, budget, cancelled), spec)[None])
        out = await slot.submit({model.inputs[0].name: pixels})
    guesses = model.onnx.top_k(out["probabilities"], top_k)[0]
    return json_response({"model": model.name, "version": model.version, "precision": "fp32",
                          "predictions": [{"top": [g.__dict__ for g in guesses]}]})


async def _celebmatch(request: Request, model: LoadedModel, limit: int, photos: DecodePool,
                      budget: Budget) -> Response:
    if CELEBMATCH not in model.bundle.manifest.apps:
        raise NotFound(f"{model.label} has no celebmatch gallery: enrol one with `tandem celebmatch enroll BUNDLE "
                       "--data DIR`, push the bundle and point the alias at the new version")
    detect = _bool_param(request, "detect", True)
    top_k = _int_param(request, "top_k", 3, 1, MAX_TOP_K)
    matcher = await asyncio.to_thread(model.matcher)  # loads the gallery once per version
    with model.batcher.slot() as slot:
        photo = await _photo(request, limit)
        t0 = time.perf_counter()
        def find(cancelled: threading.Event) -> FacePixels:
            img = decode(photo, budget, cancelled)
            if cancelled.is_set():  # the request is over: do not look for the face
                raise Cancelled()
            return matcher.face(img, detect)

        face = await photos.run(find)
        views = matcher.views(face)
        t1 = time.perf_counter()
        out = await slot.submit({model.inputs[0].name: np.concatenate(list(views.values()))})
    t2 = time.perf_counter()
    embeddings = out["embedding"]
    by_view = {v: embeddings[i : i + 1] for i, v in enumerate(views)}
    body = matcher.score(face, by_view, top_k).to_json()
    t3 = time.perf_counter()
    # Server-Timing lets a client (the browser app) show the server's stages inside its round trip.
    timing = f"preprocess;dur={(t1 - t0) * 1e3:.2f}, inference;dur={(t2 - t1) * 1e3:.2f}, score;dur={(t3 - t2) * 1e3:.2f}"
    return json_response(body, headers={"server-timing": timing, **_served(model)})


def _served(model: LoadedModel) -> dict[str, str]:
    return {"x-tandem-model": model.name, "x-tandem-model-version": str(model.version)}


def routes() -> list[Route]:
    path = "/v1/apps/{app}/{model}"
    return [Route(path, endpoint(path + ":predict", "predict", predict), methods=["POST"])]
