"""The composition root: ``create_app`` wires registry, model pool, auth, rate limits and metrics
into one Starlette app. uvicorn calls it in every worker:
``uvicorn.run("tandem.server.app:create_app", factory=True, workers=N)``.

Routes and scopes (``Authorization: Bearer <key>``; an admin key may call everything):
- open: ``GET /v2/health/live``, ``GET /v2/health/ready``
- predict: ``GET /v2``, ``GET /v2/models/{name}[/versions/{v}][/ready|/config|/stats]``, ``GET /v2/models/stats``,
  ``POST /v2/models/{name}[/versions/{v}]/infer``, ``GET|POST /v1/models/{name}[/versions/{n}|/labels/{a}][:predict]``,
  ``POST /v1/apps/{app}/{model}:predict``, ``GET /openapi.json``
- device (a device-scope API key, the fleet's): ``POST /v1/devices`` registers a device (server/ota/devices.py)
- a registered device's credential: ``POST /v1/ota/check``, ``GET /v1/ota/files/{sha256}``,
  ``GET /v1/ota/deltas/{from}/{to}``, ``POST /v1/ota/keys``, ``POST /v1/ota/report``,
  ``GET /v1/ota/signing-keys`` (server/ota/endpoints.py, docs/ota.md)
- train (managed training, server/trainings.py): ``POST /v1/trainings``, ``GET|DELETE /v1/trainings/{id}``
- admin: ``GET /metrics`` (open instead with TANDEM_METRICS_PUBLIC=1, see settings.metrics_public);
  ``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load|unload`` (server/repository.py)
- open: ``GET /docs`` the API's documentation page (server/apidocs.py, Swagger UI over this document);
  ``GET /app/`` the browser app (server/webapp.py, built from web/), which asks for keys itself;
  ``GET /`` redirects there
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem.apps.base import App
from tandem.apps.registry import Apps, builtin
from tandem.errors import quoted
from tandem.registry.ota.devices import Devices
from tandem.registry.records import Scope
from tandem.registry.registry import Registry
from tandem.server import apidocs, images, oip, openapi, ota, repository, tfserving, trainings, webapp
from tandem.server.admission import InFlightLimit
from tandem.server.auth import Authenticator, FailureGuard
from tandem.server.dataplane import DataPlane, Limits
from tandem.server.endpoint import Call, endpoint
from tandem.server.headers import SecurityHeaders
from tandem.server.observe import AccessLines, Observe, setup_access_log
from tandem.server.ota.mirrors import open_mirrors
from tandem.server.ota.service import OtaService
from tandem.server.photos import DecodePool
from tandem.server.pool import ModelPool
from tandem.server.prometheus import CONTENT_TYPE, Metrics
from tandem.server.proxies import ClientAddress, networks
from tandem.server.ratelimit import Limiter, LocalLimiter, RedisLimiter
from tandem.server.responses import hidden_places, json_response
from tandem.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a route may use, reachable as ``request.app.state.services``."""

    settings: Settings
    registry: Registry
    pool: ModelPool
    auth: Authenticator
    limiter: Limiter
    metrics: Metrics
    ota: OtaService
    devices: Devices
    photos: DecodePool  # the image endpoint's decoding threads (server/photos.py)
    plane: DataPlane  # what the inference routes delegate to (server/dataplane.py)
    trainings: trainings.Trainings  # managed training through Ray Jobs (server/trainings.py)


def _server_logging() -> None:
    # uvicorn configures its own loggers only; without this, the pool's "loaded"/"now serves" lines
    # would be lost in worker processes.
    tandem_log = logging.getLogger("tandem")
    if not tandem_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        tandem_log.addHandler(handler)
        tandem_log.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, registry: Registry | None = None,
               apps: Sequence[App] | None = None) -> Starlette:
    """``registry``: an open registry to use (and leave open); default: open the settings' own.
    ``apps``: those the image endpoint serves (tandem/apps/); default: Tandem's own, ``builtin()``."""
    settings = settings or get_settings()
    served_apps = Apps(builtin() if apps is None else apps)
    metrics = Metrics()
    _server_logging()
    if settings.access_log:
        setup_access_log()
    access_lines = AccessLines(settings.access_log_flush_ms / 1000)
    metrics_scope: Scope | None = None if settings.metrics_public else "admin"
    proxies = settings.proxies()
    networks(proxies)  # a wrong TANDEM_TRUSTED_PROXIES fails here, at start-up
    doc = openapi.document(metrics_scope, served_apps.names)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        reg = registry if registry is not None else await asyncio.to_thread(Registry.open, settings.registry)
        limiter: Limiter = (RedisLimiter(settings.redis_url, settings.rate_limit_per_s, settings.rate_limit_burst,
                                         metrics.rate_limit_errors.inc)
                            if settings.redis_url else LocalLimiter(settings.rate_limit_per_s, settings.rate_limit_burst))
        pool = ModelPool(reg, settings.server, metrics)
        ota_service = OtaService(reg, settings.ota, settings.alias_poll_s, metrics,
                                 open_mirrors(settings.ota, settings.registry, reg.store))
        # Failures get buckets of their own (per address, not per key), in Redis when limits are shared.
        failures = limiter if settings.redis_url else LocalLimiter(settings.auth_failures_per_s,
                                                                    settings.auth_failures_burst)
        guard = FailureGuard(failures, settings.auth_failures_per_s, settings.auth_failures_burst,
                             lambda reason: metrics.auth_failures.labels(reason).inc())
        registered = Devices(reg)
        auth = Authenticator(reg.verify_key, settings.key_cache_s, guard, registered.verify,
                             settings.ota_shared_key_updates)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        photos = DecodePool(settings.decode_threads or max(1, cores // settings.workers), settings.decode_queue,
                             metrics.overload.labels("decode").inc)
        plane = DataPlane(pool, photos, served_apps, Limits.of(settings.server))
        managed = trainings.Trainings(settings.server, settings.ray, settings.registry, reg.store,
                                      hidden_places(settings))
        app.state.services = Services(settings, reg, pool, auth, limiter, metrics, ota_service, registered, photos,
                                      plane, managed)
        try:
            await pool.start()
            await ota_service.start()
            yield
        finally:
            await ota_service.close()  # writes the health reports still held in memory
            await pool.close()
            photos.close()
            await limiter.close()
            if registry is None:
                reg.close()
            access_lines.flush()

    async def metrics_route(request: Request, call: Call) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def openapi_route(request: Request, call: Call) -> Response:
        return json_response(doc)

    routes = [
        *oip.routes(),
        *repository.routes(),
        *tfserving.routes(),
        *images.routes(),
        *ota.routes(),
        *trainings.routes(settings.server),
        Route("/metrics", endpoint("/metrics", metrics_scope, metrics_route), methods=["GET"]),
        Route("/openapi.json", endpoint("/openapi.json", "predict", openapi_route), methods=["GET"]),
        *webapp.routes(settings.server),
        *apidocs.routes(lambda: doc),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(ClientAddress, proxies=proxies, header=settings.forwarded_header),
                    Middleware(InFlightLimit, limit=settings.max_in_flight,
                               per_client=settings.max_in_flight_per_client,
                               ota=settings.max_in_flight_ota,
                               refused=metrics.overload.labels("in_flight").inc),
                    Middleware(Observe, metrics=metrics, log_requests=settings.access_log, lines=access_lines),
                    Middleware(SecurityHeaders, under={webapp.PREFIX: webapp.HEADERS, apidocs.PREFIX: apidocs.HEADERS})],
        exception_handlers={HTTPException: _http_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such route, wrong method) in the same ``{"error": ...}`` shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {quoted(request.url.path)}; see /openapi.json"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {quoted(request.url.path)}"
    else:
        message = exc.detail
    return json_response({"error": message}, exc.status_code, dict(exc.headers or {}))
