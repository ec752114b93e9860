"""Triton's model repository extension, for an admin key: what the registry holds and what this
worker has loaded (``POST /v2/repository/index``), and loading or unloading a model here
(``POST /v2/repository/models/{name}/load|unload``).

The repository is the registry: ``tandem push`` adds models, so a load takes no configuration or
files (Triton's override parameters are refused). A load brings the model's default version (alias
``production``, else the latest) into this worker's pool, warmed up; an unload drops every version of
it from this worker. Like the pool itself, this is per worker: with ``--workers N`` each worker
loads on its own, and a request for an unloaded model loads it again (the pool loads on demand).
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_repository.md
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem.errors import InvalidRequest, quoted
from tandem.protocol import jsonbody
from tandem.server.body import read_body
from tandem.server.dataplane import DataPlane
from tandem.server.endpoint import Call, endpoint
from tandem.server.responses import json_response

# Small JSON bodies: {"ready": true}, {"parameters": {...}}.
MAX_BODY = 64 * 1024
NOT_LOADED = "not loaded in this worker; a request for it, or POST /v2/repository/models/NAME/load, loads it"


def _plane(request: Request) -> DataPlane:
    return request.app.state.services.plane


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY)
    if not raw.strip():
        return {}
    body = jsonbody.request(raw, "repository request")
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


async def index(request: Request, call: Call) -> Response:
    body = await _body(request)
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise InvalidRequest(f"ready must be true or false, got {quoted(ready_only)}")
    plane = _plane(request)
    entries: list[dict[str, Any]] = []
    for name in await plane.models():
        loaded = plane.loaded(name)
        entries += [{"name": name, "version": str(m.version), "state": "READY", "reason": ""} for m in loaded]
        if not loaded and not ready_only:
            entries.append({"name": name, "state": "UNAVAILABLE", "reason": NOT_LOADED})
    return json_response(entries)


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidRequest(f"parameters must be a JSON object, got {quoted(params)}")
    return params


async def load(request: Request, call: Call) -> Response:
    params = _parameters(await _body(request))
    if params:
        raise InvalidRequest(f"load takes no parameters (got {', '.join(sorted(map(str, params)))}): the models "
                             "are the registry's; push a bundle with `tandem push` and move an alias instead")
    model = await _plane(request).model(request.path_params["name"])
    call.serving(model.name, model.version)
    return json_response({"name": model.name, "version": str(model.version), "state": "READY"})


async def unload(request: Request, call: Call) -> Response:
    # Triton's parameters.unload_dependents: taken, but nothing here depends on another model.
    dependents = _parameters(await _body(request)).get("unload_dependents", False)
    if not isinstance(dependents, bool):
        raise InvalidRequest(f"parameters.unload_dependents must be true or false, got {quoted(dependents)}")
    name = request.path_params["name"]
    dropped = await _plane(request).unload(name)
    return json_response({"name": name, "unloaded": [str(m.version) for m in dropped if m.name == name]})


def routes() -> list[Route]:
    m = "/v2/repository/models/{name}"
    return [
        Route("/v2/repository/index", endpoint("/v2/repository/index", "admin", index), methods=["POST"]),
        Route(m + "/load", endpoint(m + "/load", "admin", load), methods=["POST"]),
        Route(m + "/unload", endpoint(m + "/unload", "admin", unload), methods=["POST"]),
    ]
