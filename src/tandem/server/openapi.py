"""The server's OpenAPI 3.1 document, written by hand next to the routes it describes.

Every route, its scope, its request body and every status it can answer with (and that status's
body) is listed, so that a schema-driven fuzzer (schemathesis) can check the server against it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import tandem
from tandem.bundle import NAME_PATTERN
from tandem.protocol.datatypes import DATATYPES as OIP_DATATYPES

NAME = {"type": "string", "pattern": NAME_PATTERN}
VERSION_OR_ALIAS = {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"}
# An alias (or `latest`), never a version number: TF-Serving's /labels/ refuses digits (use /versions/).
LABEL = {"type": "string", "maxLength": 64, "pattern": r"^[a-z0-9_-]*[a-z_-][a-z0-9_-]*$"}
DATATYPES = list(OIP_DATATYPES)

ERROR_TEXT = {
    400: "Malformed request: bad JSON, unknown tensor name, wrong datatype, shape or element count, "
         "non-finite values, wrong binary header length, undecodable image.",
    401: "No API key, or an unknown, revoked or expired one.",
    403: "The API key lacks the scope this route needs.",
    404: "Unknown model, version, alias, app or route.",
    405: "The route exists but not with this method.",
    409: "The request clashes with the current state (a training that has already ended).",
    413: "The request body exceeds TANDEM_MAX_BODY_BYTES.",
    415: "Content-Type or Content-Encoding the route does not take.",
    416: "The Range lies outside the object (Content-Range: bytes */SIZE says its size).",
    422: "The photo holds no face (celebmatch).",
    429: "The key's rate limit is reached; Retry-After says when to retry.",
    503: "The server is at a budget (requests in flight, the model's queue: TANDEM_MAX_QUEUE_MS) or the registry "
         "(database) is not reachable right now; Retry-After says when to retry.",
    504: "The request took longer than TANDEM_REQUEST_TIMEOUT_S.",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _error(status: int) -> dict:
    out: dict[str, Any] = {"description": ERROR_TEXT[status], "content": _json(_ref("Error"))}
    if status in (401, 403):
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (429, 503):
        out["headers"] = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                                          "description": "Seconds to wait."}}
    return out


def _op(summary: str, ok: dict, errors: tuple[int, ...], scope: str | None, body: dict | None = None,
        params: list[dict] | None = None) -> dict:
    auth_errors = (401, 403, 429) if scope else ()
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **{str(s): _error(s) for s in sorted({*errors, *auth_errors})}},
        "security": [{"bearer": []}] if scope else [],
    }
    if scope:
        op["description"] = f"Needs an API key with scope `{scope}` (or `admin`)."
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    return op


def _path(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


MODEL_ERRORS = (400, 404, 503, 504)
TAIL_TEXT = (" Model NAME.tail.K is the tail of NAME's split at k=K (split inference, docs/advisor.md): it "
             "takes the tensor the device's head sends, FP32, or UINT8 with parameters scale and zero_point "
             "(x = (q - zero_point) * scale) on the input or the request.")
QUANT = {"scale": {"type": "number", "exclusiveMinimum": 0},
         "zero_point": {"type": "integer", "minimum": 0, "maximum": 255}}
BODY_ERRORS = (400, 404, 413, 415, 503, 504)


def document(metrics_scope: str | None, apps: Sequence[str] = ("celebmatch", "classify")) -> dict:
    """``apps``: the names the image endpoint serves (the registered apps)."""
    name, version, label = _path("name", NAME), _path("version", VERSION_OR_ALIAS), _path("label", LABEL)
    numeric = _path("version", {"type": "string", "pattern": "^[0-9]{1,9}$"})
    ok = lambda schema, text="OK": {"description": text, "content": _json(schema)}
    infer_ok = {"description": "Outputs as JSON, or a JSON header followed by raw tensor bytes when any output "
                "is binary (header Inference-Header-Content-Length gives the JSON's length).",
                "headers": {"Inference-Header-Content-Length": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": _ref("InferResponse")},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    infer_body = {"application/json": {"schema": _ref("InferRequest")},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    infer_header = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    "description": "Binary tensor data extension: length of the JSON header in the body."}
    predict_body = _json(_ref("PredictRequest"))
    image_body = {t: {"schema": {"type": "string", "format": "binary"}}
                  for t in ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp",
                            "application/octet-stream")}
    image_params = [
        _path("app", {"type": "string", "enum": list(apps)}), _path("model", NAME),
        _query("version", {"type": "string", "pattern": "^[0-9]{1,9}$"}, "Serve this version."),
        _query("alias", {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}, "Serve the version of this alias."),
        _query("top_k", {"type": "integer", "minimum": 1, "maximum": 100}, "How many identities/labels."),
        _query("detect", {"type": "boolean"}, "celebmatch: find the face first (default true)."),
    ]

    paths: dict[str, dict] = {
        "/v2/health/live": {"get": _op("Liveness", ok(_ref("Live")), (), None)},
        "/v2/health/ready": {"get": _op("Readiness (the registry answers)", ok(_ref("Ready")), (503,), None)},
        "/v2": {"get": _op("Server metadata", ok(_ref("ServerMetadata")), (), "predict")},
        # The browser app (server/webapp.py): a web page, open like one; it asks for keys itself.
        "/": {"get": {"summary": "Redirects to the browser app at /app/", "security": [],
                      "responses": {"307": {"description": "to /app/"}}}},
        "/app": {"get": {"summary": "The browser app: redirects to /app/", "security": [],
                         "responses": {"308": {"description": "to /app/"}}}},
        # The API's documentation page (server/apidocs.py): open, like a web page.
        "/docs": {"get": _op("This document in Swagger UI", {"description": "the page", "content": {"text/html": {}}},
                             (404,), None)},
        "/docs/openapi.json": {"get": _op("This document, for the documentation page", ok({"type": "object"}), (),
                                          None)},
        "/docs/{file}": {"get": _op("The documentation page's files (Swagger UI's, from the Python package)",
                                    {"description": "the file", "content": {"text/css": {}, "text/javascript": {}}},
                                    (404,), None, params=[_path("file", {"type": "string", "enum": [
                                        "swagger-ui.css", "swagger-ui-bundle.js", "init.js"]})])},
        "/app/{path}": {"get": _op("The browser app's files (index.html, scripts, WASM)",
                                   {"description": "the file", "content": {"text/html": {}, "*/*": {}}}, (404,), None,
                                   params=[_path("path", {"type": "string"})])},
    }
    for prefix, params in (("/v2/models/{name}", [name]), ("/v2/models/{name}/versions/{version}", [name, version])):
        paths[prefix] = {"get": _op("Model metadata", ok(_ref("ModelMetadata")), MODEL_ERRORS, "predict",
                                    params=params)}
        paths[prefix + "/ready"] = {"get": _op("Model readiness", ok(_ref("ModelReady")), MODEL_ERRORS, "predict",
                                               params=params)}
        paths[prefix + "/config"] = {"get": _op("Triton model configuration (model_configuration extension)",
                                                ok(_ref("ModelConfig")), MODEL_ERRORS, "predict", params=params)}
        paths[prefix + "/stats"] = {"get": _op(
            "Triton inference statistics of the version (or of every version of the model this worker holds), "
            "counted since it was loaded in this worker", ok(_ref("ModelStats")), MODEL_ERRORS, "predict",
            params=params)}
        infer = _op("Inference (JSON or binary tensors)", infer_ok, BODY_ERRORS, "predict", infer_body,
                    [*params, infer_header])
        infer["description"] += TAIL_TEXT
        paths[prefix + "/infer"] = {"post": infer}
    paths["/v2/models/stats"] = {"get": _op("Triton inference statistics of every model version this worker holds",
                                            ok(_ref("ModelStats")), (503, 504), "predict")}
    paths.update(_repository_paths())
    for prefix, params in (("/v1/models/{name}", [name]), ("/v1/models/{name}/versions/{version}", [name, numeric]),
                           ("/v1/models/{name}/labels/{label}", [name, label])):
        paths[prefix] = {"get": _op("TF-Serving model status", ok(_ref("ModelStatus")), MODEL_ERRORS, "predict",
                                    params=params)}
        paths[prefix + ":predict"] = {"post": _op("TF-Serving predict (instances or inputs)",
                                                  ok(_ref("PredictResponse")), BODY_ERRORS, "predict",
                                                  predict_body, params)}
        paths[prefix + ":classify"] = {"post": _op(
            "TF-Serving classify (examples): every class's [label, score] per example; a classifier only "
            "(a score per label)", ok(_ref("ClassifyResponse")), BODY_ERRORS, "predict",
            _json(_ref("ClassifyRequest")), params)}
        paths[prefix + "/metadata"] = {"get": _op("TF-Serving model metadata (signature_def)",
                                                  ok(_ref("TFModelMetadata")), MODEL_ERRORS, "predict",
                                                  params=params)}
    paths["/v1/apps/{app}/{model}:predict"] = {"post": _op(
        "Image endpoint: a photo (JPEG, PNG, WebP, GIF or BMP) in, the app's answer out", ok(_ref("AppResult")),
        (*BODY_ERRORS, 422), "predict", image_body, image_params)}
    paths["/metrics"] = {"get": _op("Prometheus metrics", {"description": "Prometheus text format",
                                    "content": {"text/plain": {"schema": {"type": "string"}}}}, (), metrics_scope)}
    paths["/openapi.json"] = {"get": _op("This document", ok({"type": "object"}), (), "predict")}
    paths.update(_devices_paths())
    paths.update(_ota_paths())
    paths.update(_training_paths())
    for path, ops in paths.items():
        for method, op in ops.items():
            op["operationId"] = operation_id(method, path)
    _link(paths, "/v2/models/{name}", {
        "versionMetadata": ("get", "/v2/models/{name}/versions/{version}", {"version": "$response.body#/versions/0"}),
        "infer": ("post", "/v2/models/{name}/infer", {}),
        "ready": ("get", "/v2/models/{name}/ready", {})})
    _link(paths, "/v2/models/{name}/versions/{version}", {
        "infer": ("post", "/v2/models/{name}/versions/{version}/infer", {"version": "$request.path.version"})})
    _link(paths, "/v1/models/{name}", {
        "versionStatus": ("get", "/v1/models/{name}/versions/{version}",
                          {"version": "$response.body#/model_version_status/0/version"}),
        "predict": ("post", "/v1/models/{name}:predict", {})})
    _link(paths, "/v1/models/{name}/versions/{version}", {
        "predict": ("post", "/v1/models/{name}/versions/{version}:predict", {"version": "$request.path.version"})})

    return {
        "openapi": "3.1.0",
        "info": {"title": "Tandem inference server", "version": tandem.__version__,
                 "description": "Open Inference Protocol v2, TF-Serving REST and an image endpoint over the "
                                "models of a Tandem registry, and over-the-air delivery of them to devices "
                                "(/v1/ota/*). Errors are {\"error\": message}."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "paths": paths,
    }


def operation_id(method: str, path: str) -> str:
    """``getV2ModelsNameVersionsVersion``: unique per method and path, stable for clients and links."""
    words = re.findall(r"[A-Za-z0-9]+", path)
    return method.lower() + "".join(w[:1].upper() + w[1:] for w in words)


def _link(paths: dict[str, dict], source: str, targets: dict[str, tuple[str, str, dict[str, str]]]) -> None:
    """OpenAPI links from the 200 answer of ``GET source`` to the operations it leads to (the same
    model, a version its answer lists): what a stateful fuzzer follows from one call to the next."""
    links = {}
    for label, (method, path, params) in targets.items():
        links[label] = {"operationId": operation_id(method, path),
                        "parameters": {"name": "$request.path.name", **params}}
    paths[source]["get"]["responses"]["200"]["links"] = links


def _repository_paths() -> dict[str, dict]:
    """Triton's model repository extension (server/repository.py), for admin keys."""
    entry = {"type": "object", "required": ["name", "state"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]}, "reason": {"type": "string"}}}
    index_body = _json({"type": "object", "properties": {"ready": {"type": "boolean"}}})
    load_body = _json({"type": "object", "properties": {"parameters": {"type": "object", "maxProperties": 0}}})
    unload_body = _json({"type": "object", "properties": {"parameters": {"type": "object", "properties": {
        "unload_dependents": {"type": "boolean"}}}}})
    for body in (index_body, load_body, unload_body):
        body["application/json"]["schema"]["examples"] = [{}]
    loaded = {"type": "object", "required": ["name", "version", "state"],
              "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "state": {"type": "string"}}}
    unloaded = {"type": "object", "required": ["name", "unloaded"],
                "properties": {"name": {"type": "string"}, "unloaded": {"type": "array", "items": {"type": "string"}}}}
    ok = lambda schema, text: {"description": text, "content": _json(schema)}
    paths = {
        "/v2/repository/index": {"post": _op(
            "The registry's models and the versions this worker has loaded (READY); {\"ready\": true}: only those",
            ok({"type": "array", "items": entry}, "The index"), (400, 413, 415, 503, 504), "admin", index_body)},
        "/v2/repository/models/{name}/load": {"post": _op(
            "Load the model's default version into this worker (warmed up); no config or file overrides",
            ok(loaded, "Loaded"), BODY_ERRORS, "admin", load_body, [_path("name", NAME)])},
        "/v2/repository/models/{name}/unload": {"post": _op(
            "Drop every version of the model from this worker; a later request loads it again",
            ok(unloaded, "The versions dropped"), BODY_ERRORS, "admin", unload_body, [_path("name", NAME)])},
    }
    for ops in paths.values():
        ops["post"]["requestBody"]["required"] = False
    return paths


def _ota_op(summary: str, responses: dict[str, Any], errors: tuple[int, ...], body: str | None = None,
            params: list[dict] | None = None) -> dict:
    """An OTA route (a registered device): its own success answers, the shared error answers."""
    op = _op(summary, {}, errors, "device", _json(_ref(body)) if body else None, params)
    del op["responses"]["200"]
    op["responses"] = {**responses, **op["responses"]}
    op["description"] = ("Needs a registered device's credential (`POST /v1/devices`), which speaks for that device "
                         "alone, or an API key with scope `admin` (naming any device_id). The fleet's shared key "
                         "with scope `device` only registers devices (403 here).")
    return op


def _devices_paths() -> dict[str, dict]:
    op = _op("Register this device: a server-assigned id and a credential of its own (docs/ota.md)", {}, (503, 504),
             "device")
    del op["responses"]["200"]
    op["responses"] = {"201": {"description": "Registered. Keep the credential: it is shown once, and every OTA "
                                              "call sends it as 'Authorization: Bearer <credential>'.",
                               "content": _json(_ref("DeviceRegistration"))}, **op["responses"]}
    op["responses"]["403"] = {**op["responses"]["403"], "description": ERROR_TEXT[403] + " Or: a registered "
                              "device's credential (a device registers once, with the fleet's key)."}
    op["responses"]["429"] = {**op["responses"]["429"], "description": ERROR_TEXT[429] + " Or: the key's "
                              "registration budget (TANDEM_DEVICE_ENROL_*) is spent for now."}
    return {"/v1/devices": {"post": op}}


def _training_paths() -> dict[str, dict]:
    """Managed training (server/trainings.py, docs/scale.md)."""
    spec = TRAINING_SCHEMAS["TrainingSpec"]["properties"]
    # With an archive body the spec is the query string (name required there); a JSON body carries it itself.
    query = [_query(k, v, v.get("description", k)) for k, v in spec.items()]
    archive = {"schema": {"type": "string", "format": "binary"}}
    body = {**{t: archive for t in ("application/zip", "application/x-tar", "application/gzip",
                                    "application/octet-stream")},
            "application/json": {"schema": _ref("TrainingReference")}}
    create = _op("Train a classifier on a dataset archive (the body, with the spec in the query string; or JSON naming "
                 "a stored archive) as a Ray Job that pushes the result into the registry", {},
                 (400, 404, 413, 415, 503, 504), "train", body, query)
    del create["responses"]["200"]
    create["responses"] = {"202": {"description": "Submitted: follow it at GET /v1/trainings/{id}.",
                                   "content": _json(_ref("TrainingSubmitted"))}, **create["responses"]}
    create["description"] += (" The archive is checked before anything is stored or any job starts: plain relative "
                              "names, regular files, no bombs, only photos, in at least two class folders, none "
                              "empty. The query parameters apply to an archive body; a JSON body carries them itself.")
    training_id = _path("id", {"type": "string", "pattern": "^tandem-train-[0-9a-f]{16}$"})
    show = _op("A training's status, epochs, pushed version or error; with Accept: text/event-stream, server-sent "
               "events (status, dataset, start, step, epoch, log, exporting, pushing, pushed, failed, end) until it "
               "ends", {"description": "The training, or its event stream",
                        "content": {"application/json": {"schema": _ref("Training")},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
               (404, 503, 504), "train", params=[training_id])
    stop = _op("Stop a training (Ray stops its job; a push in flight lands whole or not at all)", {}, (404, 409, 503, 504),
               "train", params=[training_id])
    del stop["responses"]["200"]
    stop["responses"] = {"202": {"description": "Stopping.", "content": _json(_ref("TrainingStopping"))},
                         **stop["responses"]}
    return {"/v1/trainings": {"post": create}, "/v1/trainings/{id}": {"get": show, "delete": stop}}


def _ota_paths() -> dict[str, dict]:
    sha = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    header = lambda name, text: {"name": name, "in": "header", "required": False,
                                 "schema": {"type": "string"}, "description": text}
    ranges = [header("Range", "bytes=N- (resume from byte N), bytes=N-M or bytes=-N; one range only."),
              header("If-None-Match", "The ETag held: 304 if it is this object."),
              header("If-Range", "The ETag of the partial copy held: Range applies only if it still matches.")]
    object_headers = {"ETag": {"schema": {"type": "string"}, "description": "\"<sha256 of the bytes>\""},
                      "Accept-Ranges": {"schema": {"type": "string"}}, "Cache-Control": {"schema": {"type": "string"}}}
    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    download = {
        "200": {"description": "The whole object.", "headers": object_headers, "content": binary},
        "206": {"description": "The range asked for.", "content": binary,
                "headers": {**object_headers, "Content-Range": {"schema": {"type": "string"}}}},
        "304": {"description": "Not modified: the If-None-Match ETag is this object's.", "headers": object_headers},
        "416": {**_error(416), "headers": {"Content-Range": {"schema": {"type": "string"}}}},
    }
    json_errors = (400, 404, 413, 415, 503, 504)
    keys = _ota_op("The data key of a version offered to this device",
                   {"200": {"description": "The AES-256-GCM key, base64.", "content": _json(_ref("OtaDataKey"))}},
                   json_errors, "OtaKeyRequest")
    keys["responses"]["403"] = {**keys["responses"]["403"], "description": ERROR_TEXT[403] + " Or: the version is "
                                "not offered to this device (no release or pin of it covers the device)."}
    report = _ota_op("Device health for the version it runs (the release's health gate counts it: one device, one "
                     "report, the latest)", {"204": {"description": "Counted."}}, json_errors, "OtaReport")
    report["responses"]["403"] = {**report["responses"]["403"], "description": ERROR_TEXT[403] + " Or: no release "
                                  "or pin of this version covers the device, so its report does not count."}
    report["responses"]["429"] = {**report["responses"]["429"], "description": ERROR_TEXT[429] + " Or: this device "
                                  "reported on this model less than TANDEM_OTA_REPORT_INTERVAL_S ago."}
    return {
        "/v1/ota/check": {"post": _ota_op(
            "What this device should run: 204 if it runs it, else a signed payload (docs/ota.md)",
            {"200": {"description": "A signed payload naming the version, its files and their URLs (schema 2: "
                                    "also a signed 'stay' with its reason; every one with an expiry).",
                     "content": _json(_ref("OtaEnvelope"))},
             "204": {"description": "Schema 1: the device runs what it should (or there is nothing for it)."}},
            json_errors, "OtaCheck")},
        "/v1/ota/files/{sha256}": {"get": _ota_op(
            "A file a signed payload names (encrypted model files, the manifest)", download, (404, 503, 504),
            params=[_path("sha256", sha), *ranges])},
        "/v1/ota/deltas/{from_sha256}/{to_sha256}": {"get": _ota_op(
            "An encrypted delta patch a signed payload names", download, (404, 503, 504),
            params=[_path("from_sha256", sha), _path("to_sha256", sha), *ranges])},
        "/v1/ota/keys": {"post": keys},
        "/v1/ota/report": {"post": report},
        "/v1/ota/signing-keys": {"get": _ota_op(
            "The public keys devices should trust (the current one, the next one, and those not retired)",
            {"200": {"description": "Ed25519 public keys, base64.", "content": _json(_ref("OtaSigningKeys"))}},
            (503, 504))},
    }


_DEVICE = {
    "model": {"type": "string", "description": "The model's name."},
    "channel": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$", "default": "production"},
    "device_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$",
                  "description": "A registered device: its own id, or leave it out. An admin key: the device to "
                                 "answer for."},
    "platform": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,32}$"},
    "os_version": {"type": "string", "description": "e.g. 14 or 17.2.1"},
    "app_version": {"type": "string", "description": "e.g. 2.4.0 or 3.0rc1"},
    "ram_mb": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
}
_DEVICE_EXAMPLE = {"model": "celebmatch", "version": 3, "channel": "production", "device_id": "a1b2c3d4",
                   "platform": "android", "os_version": "14", "app_version": "2.4.0", "ram_mb": 4096}
_VERSION_NUMBER = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}
_MS = {"type": "number", "minimum": 0, "maximum": 10**7}

OTA_SCHEMAS: dict[str, Any] = {
    "DeviceRegistration": {"type": "object", "required": ["device_id", "credential", "created"],
                           "additionalProperties": False, "properties": {
                               "device_id": {"type": "string", "pattern": "^[0-9a-f]{20}$"},
                               "credential": {"type": "string", "pattern": "^tdd_[0-9a-f]{20}_[A-Za-z0-9_-]{43}$"},
                               "created": {"type": "string"}}},
    "OtaCheck": {"type": "object", "required": ["model"], "examples": [_DEVICE_EXAMPLE], "properties": {
        **_DEVICE, "version": {"oneOf": [_VERSION_NUMBER, {"type": "null"}], "description": "Installed; null: none."},
        "precision": {"type": "string", "enum": ["fp32", "int8"], "default": "fp32"},
        "schema": {"type": "integer", "enum": [1, 2], "default": 1,
                   "description": "The payload schema the device reads: 2 signs every answer (a 'stay' instead of "
                                  "204) with a reason and an expiry."}}},
    "OtaEnvelope": {"type": "object", "required": ["payload", "signature", "key_id"], "additionalProperties": False,
                    "properties": {"payload": {"type": "string", "description": "base64 of the payload's JSON bytes"},
                                   "signature": {"type": "string", "description": "base64 Ed25519 signature"},
                                   "key_id": {"type": "string"},
                                   "endorsements": {"type": "array", "maxItems": 8, "description": (
                                       "Signing keys vouched for by other signing keys, each itself "
                                       "{payload, signature, key_id}: how a device follows a key rotation "
                                       "(docs/ota.md, Signing keys)"), "items": {
                                       "type": "object", "required": ["payload", "signature", "key_id"],
                                       "properties": {"payload": {"type": "string"}, "signature": {"type": "string"},
                                                      "key_id": {"type": "string"}}}}}},
    "OtaKeyRequest": {"type": "object", "required": ["model", "version"], "examples": [_DEVICE_EXAMPLE],
                      "properties": {**_DEVICE, "version": _VERSION_NUMBER}},
    "OtaDataKey": {"type": "object", "required": ["model", "version", "key_id", "alg", "key"],
                   "properties": {"model": {"type": "string"}, "version": {"type": "integer"},
                                  "key_id": {"type": "string"}, "alg": {"type": "string", "enum": ["AES-256-GCM"]},
                                  "key": {"type": "string", "description": "base64 of 32 bytes"}}},
    "OtaReport": {"type": "object", "required": ["model", "version"], "examples": [
        {**_DEVICE_EXAMPLE, "load_failures": 0, "inference_errors": 0, "inferences": 120, "p50_ms": 18.5,
         "p99_ms": 41.0}], "properties": {
        **_DEVICE, "version": _VERSION_NUMBER, "load_failures": _COUNT, "inference_errors": _COUNT,
        "inferences": _COUNT, "p50_ms": _MS, "p99_ms": _MS}},
    "OtaSigningKeys": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
        "type": "object", "required": ["key_id", "public_key", "current", "created"],
        "properties": {"key_id": {"type": "string"}, "public_key": {"type": "string"},
                       "current": {"type": "boolean"}, "created": {"type": "string"},
                       "state": {"type": "string", "enum": ["next", "current", "previous"],
                                 "description": "next: published, not signing yet; current: signing; previous: "
                                                "signed before, not retired yet"},
                       "activates": {"type": "string", "description": "A next key: when it starts signing."}}}}}},
}

_TENSOR_META = {"type": "object", "required": ["name", "datatype", "shape"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "datatype": {"type": "string", "enum": DATATYPES},
                               "shape": {"type": "array", "items": {"type": "integer"}}}}
_CONFIG_TENSOR = {"type": "object", "required": ["name", "data_type", "dims"],
                  "properties": {"name": {"type": "string"},
                                 "data_type": {"type": "string", "enum": [f"TYPE_{d}" for d in DATATYPES]},
                                 "dims": {"type": "array", "items": {"type": "integer"}}}}
_DURATION = {"type": "object", "required": ["count", "ns"],
             "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}}}
_LIKENESS = {"type": "object", "required": ["name", "label", "similarity", "percent"], "additionalProperties": False,
             "properties": {"name": {"type": "string"}, "label": {"type": "string"},
                            "similarity": {"type": "number"}, "percent": {"type": "integer"}}}
_BOX = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}

_SPEC: dict[str, Any] = {
    "name": {**NAME, "description": "The model to push the trained version to."},
    "alias": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$", "description": "Point this alias at the new version "
              "(in the push's own transaction)."},
    "task": {"type": "string", "enum": ["classify"], "description": "An image classifier over the class folders."},
    "epochs": {"type": "integer", "minimum": 1, "maximum": 10_000, "description": "Passes over the training photos."},
    "subset": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "Fraction of each class to use."},
    "batch_size": {"type": "integer", "minimum": 2, "maximum": 4096, "description": "Photos per training step."},
    "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "description": "Peak AdamW learning rate."},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "description": "Fixes the split and every draw."},
    "val_fraction": {"type": "number", "minimum": 0, "maximum": 0.5, "description": "Held out for validation."},
    "stem_stride": {"type": "integer", "enum": [1, 2], "description": "2: 3.7x less compute, lower accuracy."},
    "workers": {"type": "integer", "minimum": 1, "maximum": 1024,
                "description": "1: the plain trainer in the job; more: Ray Train workers on the cluster."},
    "gpus": {"type": "number", "minimum": 0, "maximum": 64, "description": "GPUs per worker (trains on CUDA)."},
}
TRAINING_SCHEMAS: dict[str, Any] = {
    "TrainingSpec": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": _SPEC},
    "TrainingReference": {"type": "object", "required": ["dataset", "name"], "additionalProperties": False,
                          "examples": [{"dataset": "0" * 64, "name": "faces", "alias": "production", "epochs": 5}],
                          "properties": {"dataset": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                                     "description": "sha256 of a dataset archive in the store."},
                                         **_SPEC}},
    "TrainingSubmitted": {"type": "object", "required": ["id", "status", "name", "dataset", "spec", "url"],
                          "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                         "name": {"type": "string"}, "alias": {"type": ["string", "null"]},
                                         "dataset": {"type": "string"}, "summary": {"type": "object"},
                                         "spec": {"type": "object"}, "url": {"type": "string"}}},
    "Training": {"type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": "string"}, "status": {"type": "string", "enum": ["PENDING", "RUNNING", "STOPPED", "SUCCEEDED",
                                                                      "FAILED"]},
        "name": {"type": ["string", "null"]}, "alias": {"type": ["string", "null"]},
        "dataset": {"type": ["string", "null"]}, "spec": {"type": "object"},
        "started": {"type": ["string", "null"]}, "ended": {"type": ["string", "null"]},
        "phase": {"type": ["string", "null"]}, "epochs": {"type": "array", "items": {"type": "object"}},
        "version": {"type": ["integer", "null"]}, "error": {"type": "string"}}},
    "TrainingStopping": {"type": "object", "required": ["id", "status", "stopping"],
                         "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                        "stopping": {"type": "boolean"}}},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
              "properties": {"error": {"type": "string"}}},
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"],
                       "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                      "extensions": {"type": "array", "items": {"type": "string"}}}},
    "TensorMetadata": _TENSOR_META,
    "ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                      "properties": {"name": {"type": "string"},
                                     "versions": {"type": "array", "items": {"type": "string"}},
                                     "platform": {"type": "string"},
                                     "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                                     "outputs": {"type": "array", "items": _ref("TensorMetadata")}}},
    "ModelConfig": {"type": "object", "required": ["name", "platform", "max_batch_size", "input", "output"],
                    "properties": {"name": {"type": "string"}, "platform": {"type": "string"},
                                   "backend": {"type": "string"}, "max_batch_size": {"type": "integer"},
                                   "input": {"type": "array", "items": _CONFIG_TENSOR},
                                   "output": {"type": "array", "items": _CONFIG_TENSOR},
                                   "dynamic_batching": {"type": "object"}}},
    "ModelStats": {"type": "object", "required": ["model_stats"], "properties": {"model_stats": {
        "type": "array", "items": {
            "type": "object", "required": ["name", "version", "inference_count", "execution_count",
                                           "inference_stats"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "last_inference": {"type": "integer"}, "inference_count": {"type": "integer"},
                           "execution_count": {"type": "integer"},
                           "inference_stats": {"type": "object", "additionalProperties": _DURATION},
                           "batch_stats": {"type": "array", "items": {
                               "type": "object", "required": ["batch_size"],
                               "properties": {"batch_size": {"type": "integer"},
                                              "compute_infer": _DURATION}}}}}}}},
    "ModelReady": {"type": "object", "required": ["name", "ready"],
                   "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "InferRequest": {
        "type": "object", "required": ["inputs"],
        "examples": [{"id": "1", "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                                             "data": [200, 150, 100]}]}],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}, **QUANT}},
            "inputs": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"}, "datatype": {"type": "string", "enum": DATATYPES},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "parameters": {"type": "object",
                                   "properties": {"binary_data_size": {"type": "integer", "minimum": 0},
                                                  **QUANT}},
                    "data": {"type": "array"}}}},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"},
                               "parameters": {"type": "object", "properties": {
                                   "binary_data": {"type": "boolean"},
                                   "classification": {"type": "integer", "minimum": 1,
                                                      "description": "The top K classes as BYTES strings "
                                                                     "'score:index:label' (Triton's classification "
                                                                     "extension)."}}}}}}}},
    "InferResponse": {
        "type": "object", "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"}, "datatype": {"type": "string", "enum": [*DATATYPES, "BYTES"]},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "data": {"type": "array", "items": {"type": ["number", "boolean", "string"]}},
                    "parameters": {"type": "object", "required": ["binary_data_size"],
                                   "properties": {"binary_data_size": {"type": "integer"}}}}}}}},
    "PredictRequest": {
        "type": "object", "description": "Exactly one of instances (row format) or inputs (columnar format).",
        "examples": [{"instances": [[[[200, 150, 100]]]]}, {"inputs": {"pixels": [[[[200, 150, 100]]]]}}],
        "properties": {"signature_name": {"type": "string"}, "instances": {"type": "array", "minItems": 1},
                       "inputs": {}}},
    "ClassifyRequest": {
        "type": "object", "required": ["examples"], "examples": [{"examples": [{"pixels": [[[200, 150, 100]]]}]}],
        "properties": {"signature_name": {"type": "string"}, "context": {"type": "object"},
                       "examples": {"type": "array", "minItems": 1, "items": {"type": "object"}}}},
    "ClassifyResponse": {"type": "object", "required": ["result"], "properties": {"result": {
        "type": "array", "items": {"type": "array", "items": {
            "type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "minItems": 2,
            "maxItems": 2}}}}},
    "TFModelMetadata": {"type": "object", "required": ["model_spec", "metadata"], "properties": {
        "model_spec": {"type": "object", "required": ["name", "version"],
                       "properties": {"name": {"type": "string"}, "signature_name": {"type": "string"},
                                      "version": {"type": "string"}}},
        "metadata": {"type": "object", "required": ["signature_def"], "properties": {"signature_def": {
            "type": "object", "required": ["signature_def"], "properties": {"signature_def": {
                "type": "object", "additionalProperties": {
                    "type": "object", "required": ["inputs", "outputs", "method_name"],
                    "properties": {"inputs": {"type": "object"}, "outputs": {"type": "object"},
                                   "method_name": {"type": "string"}}}}}}}}}},
    "PredictResponse": {"type": "object", "properties": {"predictions": {"type": "array"}, "outputs": {}}},
    "ModelStatus": {"type": "object", "required": ["model_version_status"], "properties": {
        "model_version_status": {"type": "array", "items": {
            "type": "object", "required": ["version", "state", "status"],
            "properties": {"version": {"type": "string"}, "state": {"type": "string", "enum": ["AVAILABLE"]},
                           "status": {"type": "object", "properties": {
                               "error_code": {"type": "string"}, "error_message": {"type": "string"}}}}}}}},
    "CelebMatch": {
        "type": "object", "required": ["sentence", "top", "parts", "face_box", "crop_window"],
        "properties": {"sentence": {"type": "string"}, "top": {"type": "array", "items": _LIKENESS},
                       "parts": {"type": "object", "additionalProperties": _LIKENESS},
                       "face_box": {"oneOf": [_BOX, {"type": "null"}]}, "crop_window": _BOX}},
    "Classification": {
        "type": "object", "required": ["model", "version", "precision", "predictions"],
        "properties": {"model": {"type": "string"}, "version": {"type": "integer"}, "precision": {"type": "string"},
                       "predictions": {"type": "array", "items": {
                           "type": "object", "required": ["top"],
                           "properties": {"top": {"type": "array", "items": {
                               "type": "object", "required": ["label", "probability"],
                               "properties": {"label": {"type": "string"},
                                              "probability": {"type": "number"}}}}}}}}},
    "AppResult": {"oneOf": [{"$ref": "#/components/schemas/CelebMatch"},
                            {"$ref": "#/components/schemas/Classification"}]},
    **OTA_SCHEMAS,
    **TRAINING_SCHEMAS,
}
