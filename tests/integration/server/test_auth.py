"""Every route × every kind of key: 401 without a valid key, 403 with the wrong scope, 200 with the
right one; health is open. And the access log never shows a key."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from tests.integration.server.serving import populate, running, test_settings

pytestmark = pytest.mark.integration

PIX = np.zeros((1, 100, 75, 3), np.uint8)
_HEAD = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 100, 75, 3],
                                "parameters": {"binary_data_size": PIX.nbytes}}]}).encode()
INFER = {"content": _HEAD + PIX.tobytes(), "headers": {"Inference-Header-Content-Length": str(len(_HEAD))}}
TF = {"json": {"instances": PIX.tolist()}}


@pytest.fixture(scope="module")
def photo_kwargs(photos):
    return {"content": photos[0].read_bytes(), "headers": {"content-type": "image/jpeg"}}


def routes(photo_kwargs) -> list[tuple[str, str, dict, str]]:
    """(method, path, request kwargs, scope it needs)."""
    return [
        ("get", "/v2", {}, "predict"),
        ("get", "/v2/models/faces", {}, "predict"),
        ("get", "/v2/models/faces/versions/1", {}, "predict"),
        ("get", "/v2/models/faces/ready", {}, "predict"),
        ("get", "/v2/models/faces/versions/production/ready", {}, "predict"),
        ("post", "/v2/models/faces/infer", INFER, "predict"),
        ("post", "/v2/models/faces/versions/1/infer", INFER, "predict"),
        ("get", "/v1/models/faces", {}, "predict"),
        ("get", "/v1/models/faces/versions/1", {}, "predict"),
        ("get", "/v1/models/faces/labels/production", {}, "predict"),
        ("post", "/v1/models/faces:predict", TF, "predict"),
        ("post", "/v1/models/faces/versions/2:predict", TF, "predict"),
        ("post", "/v1/models/faces/labels/production:predict", TF, "predict"),
        ("post", "/v1/apps/celebmatch/faces:predict", photo_kwargs, "predict"),
        ("post", "/v1/apps/classify/faces:predict", photo_kwargs, "predict"),
        ("get", "/openapi.json", {}, "predict"),
        ("get", "/metrics", {}, "admin"),
    ]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def served(tmp_path_factory, bundles):
    settings = test_settings(tmp_path_factory.mktemp("home"), access_log=True)
    keys = populate(settings, list(bundles))
    access = logging.getLogger("tandem.access")
    lines = Lines()
    access.addHandler(lines)
    try:
        with running(settings) as server:
            yield server, keys, lines
    finally:
        access.removeHandler(lines)


def ask(client, method: str, path: str, kwargs: dict, key: str | None = None, header: str | None = None):
    """(status, WWW-Authenticate, body) of one call with ``key`` (or a raw Authorization ``header``)."""
    kw = dict(kwargs)
    headers = kw.pop("headers", {})
    if key or header:
        headers = {**headers, "authorization": header or f"Bearer {key}"}
    r = getattr(client, method)(path, headers=headers, **kw)
    body = r.json() if r.headers["content-type"] == "application/json" else r.text
    return r.status_code, r.headers.get("www-authenticate", ""), body


def test_each_route_needs_a_valid_key_with_the_right_scope(served, photo_kwargs):
    server, keys, _ = served
    wrong = {"predict": keys.device, "admin": keys.predict}
    with server.client() as c:
        for method, path, kwargs, need in routes(photo_kwargs):
            code, www, body = ask(c, method, path, kwargs)
            assert code == 401 and www == 'Bearer realm="tandem"', path
            assert "this route needs an API key" in body["error"]
            code, www, body = ask(c, method, path, kwargs, header="Basic dXNlcjpwYXNz")
            assert code == 401 and "must be 'Bearer <api key>'" in body["error"], path
            code, www, body = ask(c, method, path, kwargs, keys.revoked)
            assert code == 401 and 'error="invalid_token"' in www and body == {"error": "unknown or revoked API key"}
            assert ask(c, method, path, kwargs, "tdm_000000000000_" + "x" * 43)[0] == 401, path
            code, www, body = ask(c, method, path, kwargs, wrong[need])
            assert code == 403 and 'error="insufficient_scope"' in www, path
            assert f"this route needs a key with scope '{need}'" in body["error"]
            assert body["error"].count(f"'{need}'") == 1, body  # the scope needed, named once
            assert ask(c, method, path, kwargs, keys.predict if need == "predict" else keys.admin)[0] == 200, path
            assert ask(c, method, path, kwargs, keys.admin)[0] == 200, path


def test_health_is_open(served):
    server, _, _ = served
    with server.client() as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2/health/ready", headers={"authorization": "Bearer nonsense"}).status_code == 200


def test_access_log_is_json_and_never_holds_a_key(served, photo_kwargs):
    server, keys, lines = served
    with server.client(keys.predict) as c:
        assert c.post("/v2/models/faces/infer", headers={"x-request-id": "trace-7", **INFER["headers"]},
                      content=INFER["content"]).status_code == 200
    # The line is written once the response is out, which can be just after the client has it.
    deadline = time.monotonic() + 10
    while '"trace-7"' not in "".join(lines.lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    entries = [json.loads(line) for line in lines.lines]
    mine = [e for e in entries if e["request_id"] == "trace-7"]
    assert len(mine) == 1
    e = mine[0]
    assert (e["method"], e["route"], e["status"], e["model"], e["version"]) == (
        "POST", "/v2/models/{name}/infer", 200, "faces", "1")
    assert e["key_id"] == keys.predict.split("_")[1] and e["bytes_in"] == len(INFER["content"]) and e["ms"] > 0
    log_text = "\n".join(lines.lines)
    for key in (keys.predict, keys.admin, keys.device, keys.revoked):
        assert key.split("_", 2)[2] not in log_text  # the secret itself may hold "_"
    assert any(x["status"] == 401 and x["error"] == "Unauthenticated" for x in entries)
