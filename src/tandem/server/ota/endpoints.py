"""Over-the-air delivery routes for registered devices (docs/ota.md is the contract); a device is
the id its credential names (an admin key names any ``device_id``):

- ``POST /v1/ota/check``: a signed payload naming what the device should run (schema 1: 204 when it
  runs it; schema 2, asked for with ``"schema": 2``: a signed "stay" then, every answer with an expiry),
  with the model of the runtime it names (``"runtime": "litert"``; none: ONNX)
- ``GET /v1/ota/files/{sha256}``, ``GET /v1/ota/deltas/{from_sha256}/{to_sha256}``: the bytes
- ``POST /v1/ota/keys``: a version's data key, for a version offered to the device
- ``POST /v1/ota/report``: device health, one counted report per device and release (the health gate)
- ``GET /v1/ota/signing-keys``: the public keys devices should trust

Every answer comes from the worker's in-memory state (state.py); the database is not on these
routes' path, except to make an object that is missing or to write health reports in batches.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem.bundle import NAME_RE
from tandem.errors import ConfigError, Forbidden, InvalidRequest, NotFound, RateLimited, quoted, whole_seconds
from tandem.registry.ota.releases import (
    DEFAULT_CHANNEL,
    MAX_RAM_MB,
    DeviceReport,
    check_channel,
    check_device_id,
    check_platform,
)
from tandem.registry.ota.rollout import Device
from tandem.registry.ota.variants import DEFAULT_RUNTIME, check_platform_runs, check_precision, check_runtime
from tandem.server.body import read_body
from tandem.server.endpoint import Call, endpoint
from tandem.server.ota.downloads import send_object
from tandem.server.ota.service import OtaService
from tandem.server.ota.state import ALG, OtaState, Served, unknown_model
from tandem.server.responses import json_response

SCHEMA = 1  # what a device that names no payload schema gets: 204 when current, rollbacks as recorded
SIGNED_STAY = 2  # every answer signed (stay too), with a reason and an expiry
SCHEMAS = (SCHEMA, SIGNED_STAY)
MAX_BODY = 16 * 1024  # a check or a report is a few hundred bytes
MAX_VERSION = 2**31 - 1
MAX_COUNT = 10**9
MAX_MS = 10**7
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NO_STORE = {"cache-control": "no-store"}


def _service(request: Request) -> OtaService:
    return request.app.state.services.ota


async def _json(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the body is not valid JSON ({e}); send a JSON object, see docs/ota.md") from e
    if not isinstance(obj, dict):
        raise InvalidRequest(f"the body must be a JSON object, not {type(obj).__name__}; see docs/ota.md")
    return obj


def _int(obj: dict[str, Any], field: str, low: int, high: int, required: bool = False, default: int | None = None,
         what: str = "") -> int | None:
    value = obj.get(field)
    if value is None:
        if required:
            raise InvalidRequest(f"{field!r} is required: {what}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{field!r} must be a whole number from {low} to {high}, not {quoted(value, 40)}")
    return value


def _text(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{field!r} must be a string, not {type(value).__name__}")
    return value or None


def _ms(obj: dict[str, Any], field: str) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= MAX_MS:
        raise InvalidRequest(f"{field!r} must be milliseconds from 0 to {MAX_MS}, not {quoted(value, 40)}")
    return float(value)


def _model(obj: dict[str, Any]) -> str:
    name = obj.get("model")
    if not isinstance(name, str):
        raise InvalidRequest("'model' is required: the name of the model the app runs, e.g. \"celebmatch\"")
    if not NAME_RE.fullmatch(name):
        raise NotFound(f"no model named {quoted(name)}: model names are 1-64 letters, digits, '.', '_' or '-'")
    return name


def _visible(state: OtaState, call: Call, name: str) -> None:
    """404, as for a model that does not exist, when the caller's model scope (its device key's,
    inherited at registration) leaves ``name`` out: asked about another model, a device learns nothing,
    not even that it exists."""
    principal = call.principal
    if principal is not None and not principal.model_scope.allows(name, state.apps_of):
        raise unknown_model(name)


def _channel(obj: dict[str, Any]) -> str:
    return check_channel(obj.get("channel") or DEFAULT_CHANNEL)


def _device_id(obj: dict[str, Any], call: Call) -> str:
    """Who the request is about: a registered device is itself (its server-assigned id), whatever the
    body claims; an admin key (or, in transition, the fleet's shared key) names a device_id."""
    principal = call.principal
    claimed = obj.get("device_id")
    if principal is not None and principal.device_id is not None:
        if claimed is not None and claimed != principal.device_id:
            raise Forbidden(f"device_id {quoted(claimed)} is not the id of the device whose credential this is "
                            f"({principal.device_id}): a device speaks only for itself; send its own id or none")
        return principal.device_id
    return check_device_id(claimed)


def _device(obj: dict[str, Any], installed: int | None, call: Call, runtime: str | None = None) -> Device:
    """What the device says of itself. ``runtime``: the check's (onnx when it names none); elsewhere the
    body's ``runtime`` if it sends one (else the rules are not judged on it)."""
    platform = obj.get("platform")
    if runtime is None and obj.get("runtime") is not None:
        runtime = check_runtime(obj["runtime"])
    return Device.parse(
        _device_id(obj, call), installed, check_platform(platform) if platform is not None else None,
        _text(obj, "os_version"), _text(obj, "app_version"), _int(obj, "ram_mb", 0, MAX_RAM_MB), runtime)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def check(request: Request, call: Call) -> Response:
    svc = _service(request)
    obj = await _json(request)
    name = _model(obj)
    installed = _int(obj, "version", 1, MAX_VERSION)
    schema = _int(obj, "schema", 1, 1_000, default=SCHEMA)
    if schema not in SCHEMAS:
        raise InvalidRequest(f"'schema' {schema} is not a payload schema this server signs ({SCHEMAS}); see docs/ota.md")
    channel = _channel(obj)
    precision = check_precision(obj.get("precision") or "fp32")
    # A device that names its runtime gets that runtime's variant, and the payload says which (docs/ota.md,
    # "Variants"); one that names none gets the ONNX model in the payload it always had, byte for byte.
    asked = obj.get("runtime") is not None
    runtime = check_runtime(obj["runtime"]) if asked else DEFAULT_RUNTIME
    if asked and schema != SIGNED_STAY:
        raise InvalidRequest(f"'runtime' needs payload schema {SIGNED_STAY} (send \"schema\": {SIGNED_STAY}): what a "
                             "device cannot run is answered with a signed stay; see docs/ota.md")
    device = _device(obj, installed, call, runtime)
    if asked:
        check_platform_runs(device.platform, runtime)
    state = svc.state
    if state.activation_due(datetime.now(UTC)):  # the next signing key's time has come: it signs this answer
        await svc.activate_due()
        state = svc.state
    _visible(state, call, name)
    state.check_channel(name, channel)
    decision = state.decide(name, channel, device)
    # Releases without a model for the device's runtime do not cover it (rollout.targets); a pin may still name
    # such a version. Either way the device stays where it is, told (signed) which variants there would be.
    variant, instead = None, None
    if decision is not None and decision.action != "stay":
        variant = state.variant(name, channel, decision.version, runtime, precision)
        if variant is None:
            instead, decision = sorted(state.variants_of(name, channel, decision.version)), None
    elif decision is None:
        probe = state.decide(name, channel, dataclasses.replace(device, runtime=None))
        if probe is not None and probe.action != "stay":
            instead = sorted(state.variants_of(name, channel, probe.version))
    # Only names that exist become metric labels, and only versions the server chose: with no release for
    # the device, the version it says it runs is its word (server/prometheus.py).
    if decision is None:
        call.model = name
    else:
        call.serving(name, decision.version)
    metrics = svc.metrics
    current = decision is None or decision.version == installed
    if current:
        metrics.ota_checks.labels(name, call.version, "none" if decision is None else "current").inc()
        if schema == SCHEMA:
            return Response(status_code=204)
    if state.signer is None:
        raise ConfigError("the server has no current signing key, so it cannot sign an answer; create one with "
                          "`tandem keys signing create`")
    issued = datetime.now(UTC).replace(microsecond=0)
    payload: dict[str, Any] = {"schema": schema, "model": name, "channel": channel, "device_id": device.device_id,
                               "issued_at": _stamp(issued), "sequence": state.generation}
    if schema == SIGNED_STAY:
        payload["expires_at"] = _stamp(issued + timedelta(seconds=svc.settings.ota_payload_ttl_s))
        if state.retired_keys:  # signed, so that only the server's word makes a device drop a key
            payload["retired_keys"] = state.retired_keys
    if current:  # schema 2 only: "stay", signed, so that silence cannot be forged
        if instead is not None:
            payload.update({"version": installed, "action": "stay", "reason": "no_variant", "variants": instead})
            return json_response(state.sign(orjson.dumps(payload)), headers=NO_STORE)
        reason = "no_release" if decision is None else ("current" if decision.action != "stay" else decision.reason)
        payload.update({"version": installed, "action": "stay", "reason": reason})
        return json_response(state.sign(orjson.dumps(payload)), headers=NO_STORE)
    assert decision is not None and variant is not None
    files = await svc.files(state, name, decision.version, variant, installed)
    payload.update({"version": decision.version, "action": decision.action, "precision": files.precision,
                    **({"variant": files.variant} if asked else {}),
                    "manifest_sha256": state.versions[name][decision.version].manifest_sha256, "files": files.files})
    if schema == SIGNED_STAY:
        payload["reason"] = decision.reason
        # Schema 2 only: the SDKs that read mirrors ask for it. Added per answer, so that a presigned URL is never
        # older than its reuse allows (the cached files hold none).
        direct = svc.mirrored(files.files)
        if direct is not None and direct.origins:
            payload["files"], payload["download_origins"] = direct.files, direct.origins
    metrics.ota_checks.labels(name, call.version, decision.action).inc()
    deltas = sum("delta" in f for f in files.files.values())
    if deltas:
        metrics.ota_deltas_offered.labels(name, call.version).inc(deltas)
    # Signed per request (the payload names the device and the time); Ed25519 costs ~50 µs.
    return json_response(state.sign(orjson.dumps(payload)), headers=NO_STORE)


async def file(request: Request, call: Call) -> Response:
    sha = request.path_params["sha256"]
    state = _service(request).state
    served = _in_scope(state, call, state.served.get(sha) if SHA256_RE.fullmatch(sha) else None)
    if served is None:
        raise NotFound(f"no downloadable object {quoted(sha, 70)}: download only the URLs a signed payload of "
                       "POST /v1/ota/check names")
    return await _send(request, served.sha256, served.kind)


async def delta(request: Request, call: Call) -> Response:
    src, dst = request.path_params["from_sha256"], request.path_params["to_sha256"]
    state = _service(request).state
    served = _in_scope(state, call, state.delta_urls.get((src, dst))
                       if SHA256_RE.fullmatch(src) and SHA256_RE.fullmatch(dst) else None)
    if served is None:
        raise NotFound("no delta patch between these objects: download only the delta URLs a signed payload of "
                       "POST /v1/ota/check names (or the full file)")
    return await _send(request, served.sha256, served.kind)


def _in_scope(state: OtaState, call: Call, served: Served | None) -> Served | None:
    """``served``, or None (the same 404 as an unknown object) when it belongs to a model outside the
    caller's model scope."""
    if served is None or call.principal is None or call.principal.model_scope.allows(served.model, state.apps_of):
        return served
    return None


async def _send(request: Request, sha: str, kind: str) -> Response:
    svc = _service(request)
    counter = svc.metrics.ota_bytes.labels(kind)
    response = await send_object(request, svc.registry.store, sha, svc.verified, counter.inc)
    svc.metrics.ota_downloads.labels(kind, str(response.status_code)).inc()
    return response


async def keys(request: Request, call: Call) -> Response:
    svc = _service(request)
    obj = await _json(request)
    name = _model(obj)
    version = _int(obj, "version", 1, MAX_VERSION, required=True, what="the version whose data key the device needs")
    assert version is not None
    channel = _channel(obj)
    device = _device(obj, None, call)
    state = svc.state
    _visible(state, call, name)
    state.check_channel(name, channel)
    if version not in state.versions.get(name, {}):
        raise NotFound(f"model {name} has no version {version}")
    call.serving(name, version)
    if not state.offers(name, channel, device, version):
        raise Forbidden(f"{name} v{version} is not offered to device {device.device_id} on channel {channel}, so its "
                        "key is not given out; ask POST /v1/ota/check which version this device should have (send "
                        "the same platform, os_version, app_version and ram_mb here as there)")
    key_id, key = await svc.data_key(state, name, version)
    return json_response({"model": name, "version": version, "key_id": key_id, "alg": ALG,
                          "key": base64.b64encode(key).decode()}, headers=NO_STORE)


async def report(request: Request, call: Call) -> Response:
    services = request.app.state.services
    svc: OtaService = services.ota
    obj = await _json(request)
    name = _model(obj)
    version = _int(obj, "version", 1, MAX_VERSION, required=True, what="the version the device runs")
    assert version is not None
    channel = _channel(obj)
    device = _device(obj, version, call)
    counts = {f: _int(obj, f, 0, MAX_COUNT, default=0) or 0 for f in ("load_failures", "inference_errors", "inferences")}
    if counts["inference_errors"] > counts["inferences"]:
        raise InvalidRequest(f"inference_errors ({counts['inference_errors']}) is more than inferences "
                             f"({counts['inferences']}): count every inference run in inferences, failed ones too")
    p50, p99 = _ms(obj, "p50_ms"), _ms(obj, "p99_ms")
    state = svc.state
    _visible(state, call, name)
    state.check_channel(name, channel)
    if (name, version, channel) not in state.released:
        raise NotFound(f"{name} v{version} has no release on channel {channel}, so there is no release to report on")
    call.serving(name, version)
    if call.principal is not None and call.principal.scope == "device" and call.principal.device_id is None:
        raise Forbidden("health reports count only from registered devices, not from the fleet's shared key: "
                        "register with POST /v1/devices and report with the device's credential (docs/ota.md)")
    if not state.was_offered(name, channel, device, version):
        raise Forbidden(f"{name} v{version} was never offered to device {device.device_id} on channel {channel} (no "
                        "release or pin of it covers this device), so its report does not count; send the same "
                        "platform, os_version, app_version and ram_mb here as in POST /v1/ota/check")
    # One counted report per device and model per interval: a device cannot outvote others by repeating itself.
    interval = services.settings.ota_report_interval_s
    wait = await services.limiter.take(f"ota-report:{name}:{device.device_id}", 1 / interval, 1)
    if wait > 0:
        raise RateLimited(f"device {device.device_id} reported on {name} less than {interval:g} s ago "
                          f"(TANDEM_OTA_REPORT_INTERVAL_S); retry in {whole_seconds(wait)} s", retry_after=wait)
    one = DeviceReport(counts["load_failures"], counts["inference_errors"], counts["inferences"], p50, p99)
    svc.reports.add((name, version, channel), device.device_id, one)
    svc.metrics.ota_reports.labels(name, str(version), "true" if one.failed else "false").inc()
    return Response(status_code=204)


async def signing_keys(request: Request, call: Call) -> Response:
    return json_response({"keys": _service(request).state.public_keys})


def routes() -> list[Route]:
    table: list[tuple[str, Any, str]] = [
        ("/v1/ota/check", check, "POST"),
        ("/v1/ota/files/{sha256}", file, "GET"),
        ("/v1/ota/deltas/{from_sha256}/{to_sha256}", delta, "GET"),
        ("/v1/ota/keys", keys, "POST"),
        ("/v1/ota/report", report, "POST"),
        ("/v1/ota/signing-keys", signing_keys, "GET"),
    ]
    return [Route(path, endpoint(path, "device", fn, device_route=True), methods=[method]) for path, fn, method in table]
