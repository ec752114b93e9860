"""Device registration (docs/ota.md): ``POST /v1/devices`` with the fleet's device-scope API key
(or an admin key) answers a server-assigned device id and a credential for that device alone, which
it sends on every OTA call from then on. The enrolling key has a registration budget of its own
(TANDEM_DEVICE_ENROL_*), on top of its request rate limit: the key ships inside every app."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem.errors import RateLimited, whole_seconds
from tandem.server.endpoint import Call, endpoint
from tandem.server.responses import json_response

NO_STORE = {"cache-control": "no-store"}


async def register(request: Request, call: Call) -> Response:
    services = request.app.state.services
    settings = services.settings
    assert call.principal is not None
    key_id = call.principal.key_id
    wait = await services.limiter.take(f"enrol:{key_id}", settings.device_enrol_per_s, settings.device_enrol_burst)
    if wait > 0:
        raise RateLimited(f"key {key_id} has registered as many devices as it may for now "
                          f"(TANDEM_DEVICE_ENROL_PER_S); retry in {whole_seconds(wait)} s", retry_after=wait)
    # The device inherits the enrolling key's model scope: it sees only the models that key may.
    token, info = await asyncio.to_thread(services.devices.register, key_id, call.principal.model_scope)
    return json_response({"device_id": info.device_id, "credential": token, "created": info.created.isoformat()},
                         201, NO_STORE)


def routes() -> list[Route]:
    return [Route("/v1/devices", endpoint("/v1/devices", "device", register), methods=["POST"])]
