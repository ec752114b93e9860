"""What every route shares: the API-key check, the rate limit, the time limit and the translation
of errors into ``{"error": ...}`` answers. Protocol modules hold only protocol logic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tandem.errors import RequestTimeout, TandemError
from tandem.registry.records import KeyInfo, Scope
from tandem.server import ratelimit
from tandem.server.responses import error_response, hidden_places, json_response

log = logging.getLogger(__name__)

CALL = "tandem.call"


@dataclass
class Call:
    """What the access log and the metrics learn about a request while it is handled."""

    route: str = "unmatched"
    model: str = ""
    version: str = ""
    key_id: str = ""
    error: str = ""
    principal: KeyInfo | None = None  # who called (None on open routes): an API key or a registered device

    def serving(self, name: str, version: int) -> None:
        self.model, self.version = name, str(version)


def call_of(request: Request) -> Call:
    call = request.scope.get(CALL)
    if call is None:  # the app runs without the observing middleware (not in `tandem serve`)
        call = request.scope[CALL] = Call()
    return call


Handler = Callable[[Request, Call], Awaitable[Response]]


def endpoint(route: str, need: Scope | None, handler: Handler, device_route: bool = False,
             timeout: Callable[[Request], float] | None = None) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler`` for the route template ``route``; ``need``: the scope it takes (None: open);
    ``device_route``: an OTA route, for registered devices (and admin keys), see server/auth.py;
    ``timeout``: the request's time limit in seconds, in place of TANDEM_REQUEST_TIMEOUT_S (a dataset upload)."""

    async def run(request: Request) -> Response:
        services = request.app.state.services
        call = call_of(request)
        call.route = route
        try:
            if need is not None:
                client = request.client.host if request.client else ""
                key = await services.auth.authenticate(request.headers.get("authorization"), need, client,
                                                       device_route)
                call.key_id, call.principal = key.key_id, key
                # A key's own bucket (tandem keys create --rate/--burst) over its scope's default.
                rate, burst = services.settings.rate_for(key.scope, key.device_id is not None)
                await ratelimit.check(services.limiter, key.key_id, key.rate_per_s or rate, key.burst or burst)
            limit = services.settings.request_timeout_s if timeout is None else timeout(request)
            try:
                async with asyncio.timeout(limit) as deadline:
                    return await handler(request, call)
            except TimeoutError:
                if deadline.expired():
                    setting = "TANDEM_REQUEST_TIMEOUT_S" if timeout is None else "this route's own limit"
                    raise RequestTimeout(f"the request took longer than {limit:g} s ({setting}); the server is "
                                         "overloaded or the request too large") from None
                raise
        except TandemError as e:
            call.error = type(e).__name__
            return error_response(e, hidden_places(services.settings))
        except Exception:
            call.error = TandemError.__name__  # the metrics' name for an unexpected exception (server/prometheus.py)
            log.exception("unhandled error on %s %s", request.method, route)
            return json_response({"error": "internal server error; the server log has the details"}, 500)

    run.__name__ = handler.__name__
    return run
