"""Every route the app has × every kind of credential → the exact answer, with the routes read from
the app itself, so that a route added later without an entry here fails the test instead of
escaping it. Also: keys never reach any log, key checks compare hashes in constant time, and
guessing keys from one address is slowed down (429) and counted in /metrics.

There are no tenants: every key is the registry's, so "a key of another tenant" has no case here.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from starlette.routing import Mount, Route

from tandem.registry.registry import Registry
from tandem.security import apikeys
from tests.integration.server.serving import Keys, populate, running, test_settings

pytestmark = pytest.mark.integration

# The scope each route needs, as docs/serving.md and docs/ota.md state it (None: open).
SCOPES: dict[str, str | None] = {
    "/v2/health/live": None,
    "/v2/health/ready": None,
    "/v2": "predict",
    "/v2/models/{name}": "predict",
    "/v2/models/{name}/versions/{version}": "predict",
    "/v2/models/{name}/ready": "predict",
    "/v2/models/{name}/versions/{version}/ready": "predict",
    "/v2/models/{name}/infer": "predict",
    "/v2/models/{name}/versions/{version}/infer": "predict",
    "/v2/models/stats": "predict",
    "/v2/models/{name}/config": "predict",
    "/v2/models/{name}/versions/{version}/config": "predict",
    "/v2/models/{name}/stats": "predict",
    "/v2/models/{name}/versions/{version}/stats": "predict",
    "/v2/repository/index": "admin",
    "/v2/repository/models/{name}/load": "admin",
    "/v2/repository/models/{name}/unload": "admin",
    "/v1/models/{name}": "predict",
    "/v1/models/{name}/versions/{version}": "predict",
    "/v1/models/{name}/labels/{label}": "predict",
    "/v1/models/{name}/metadata": "predict",
    "/v1/models/{name}/versions/{version}/metadata": "predict",
    "/v1/models/{name}/labels/{label}/metadata": "predict",
    "/v1/apps/{app}/{model}": "predict",
    "/v1/devices": "device",  # the fleet's device-scope key registers a device
    "/v1/ota/check": "device",
    "/v1/ota/files/{sha256}": "device",
    "/v1/ota/deltas/{from_sha256}/{to_sha256}": "device",
    "/v1/ota/keys": "device",
    "/v1/ota/report": "device",
    "/v1/ota/signing-keys": "device",
    "/v1/trainings": "train",  # managed training (docs/scale.md)
    "/v1/trainings/{id}": "train",
    "/openapi.json": "predict",
    "/metrics": "admin",
    "/app": None,  # the browser app: a public page that asks for keys itself
    "/docs": None,  # the API's documentation page, and the document and files it shows
    "/docs/openapi.json": None,
    "/docs/{file}": None,
    "/": None,  # sends a browser to /app/
}
# Routes for a registered device's credential (or admin): the fleet's device-scope key is refused there.
REGISTERED = {path for path in SCOPES if path.startswith("/v1/ota/")}
PARAMS = {"name": "faces", "version": "1", "label": "production", "app": "classify", "model": "faces:predict",
          "sha256": "a" * 64, "file": "init.js", "from_sha256": "b" * 64, "to_sha256": "c" * 64,
          "id": "tandem-train-0123456789abcdef"}
REALM = 'Bearer realm="tandem"'
HIDDEN = "tdm_000000000000_" + "x" * 43  # well-formed, but no such key


def requests_of(app) -> list[tuple[str, str, str | None, bool]]:
    """(method, concrete path, scope, for registered devices) for every method of every route of ``app``."""
    out = []
    for route in app.routes:
        assert route.path in SCOPES, f"{route.path} is a new route: add its scope to SCOPES (and docs/serving.md)"
        if isinstance(route, Mount):
            out += [("GET", route.path + "/", SCOPES[route.path], False), ("GET", route.path + "/index.html", None,
                                                                           False)]
            continue
        assert isinstance(route, Route)
        path = re.sub(r"{(\w+)}", lambda m: PARAMS[m.group(1)], route.path)
        out += [(method, path, SCOPES[route.path], route.path in REGISTERED) for method in sorted(route.methods or ())]
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server over a registry with keys of every scope (and a revoked one), no models: the key
    check comes before anything a route does, so a model is not needed to see it."""
    settings = test_settings(tmp_path_factory.mktemp("home"), access_log=True)
    keys = populate(settings, [], production=None)
    records = Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    access = logging.getLogger("tandem.access")  # does not propagate: it prints JSON lines itself
    access.addHandler(records)
    try:
        with running(settings) as server:
            yield server, keys, records
    finally:
        root.removeHandler(records)
        root.setLevel(old_level)
        access.removeHandler(records)


class Records(logging.Handler):
    """Every log record of the process, as the text a handler would write."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


def credentials(keys: Keys, need: str | None, registered: bool = False) -> dict[str, str | None]:
    """Authorization header per kind of caller. ``registered``: a route for registered devices, where the
    right caller is a device's credential, and the fleet's device key (right scope, wrong kind) is refused."""
    wrong = {"predict": keys.device, "device": keys.predict, "train": keys.predict, "admin": keys.predict}
    right = {"predict": keys.predict, "device": keys.registered if registered else keys.device, "train": keys.train,
             "admin": keys.admin}
    return {
        "none": None,
        "not bearer": "Basic dXNlcjpwYXNz",
        "empty bearer": "Bearer",
        "malformed": "Bearer not-a-tandem-key",
        "oversized": "Bearer " + "k" * 600,
        "unknown": f"Bearer {HIDDEN}",
        "revoked": f"Bearer {keys.revoked}",
        "wrong scope": f"Bearer {wrong[need]}" if need else f"Bearer {keys.device}",
        "right scope": f"Bearer {right[need]}" if need else f"Bearer {keys.predict}",
        "admin": f"Bearer {keys.admin}",
        # The other kind of device credential: the fleet's key on a device's route, a device's credential elsewhere.
        "other device kind": f"Bearer {keys.device if registered else keys.registered}",
    }


# (status, WWW-Authenticate) each caller must get from a route that needs a scope.
EXPECTED = {
    "none": (401, REALM),
    "not bearer": (401, f'{REALM}, error="invalid_request"'),
    "empty bearer": (401, f'{REALM}, error="invalid_request"'),
    "malformed": (401, f'{REALM}, error="invalid_token"'),
    "oversized": (401, f'{REALM}, error="invalid_token"'),
    "unknown": (401, f'{REALM}, error="invalid_token"'),
    "revoked": (401, f'{REALM}, error="invalid_token"'),
}


def test_every_route_answers_every_caller_exactly(served):
    server, keys, _ = served
    calls = requests_of(server.app)
    assert len(calls) >= len(SCOPES)
    seen = set()
    with server.client() as c:
        for method, path, need, registered in calls:
            for who, header in credentials(keys, need, registered).items():
                r = c.request(method, path, headers={"authorization": header} if header else {})
                where = f"{method} {path} as {who}: {r.status_code} {r.text[:200]}"
                www = r.headers.get("www-authenticate")
                if need is None:  # open: no caller is refused for its key, whatever it sends
                    assert r.status_code not in (401, 403, 429) and www is None, where
                elif who in EXPECTED:
                    assert (r.status_code, www) == EXPECTED[who], where
                    if method != "HEAD":
                        assert r.json()["error"], where
                elif who == "wrong scope":
                    assert r.status_code == 403, where
                    assert www == f'{REALM}, error="insufficient_scope", scope="{need}"', where
                    if method != "HEAD":
                        assert f"this route needs a key with scope '{need}'" in r.json()["error"], where
                elif who == "other device kind":
                    if registered:  # the fleet's key on an OTA route: it only registers devices
                        assert r.status_code == 403, where
                        assert www == f'{REALM}, error="insufficient_scope", scope="{need}"', where
                        if method != "HEAD":
                            assert "only registers devices: POST /v1/devices" in r.json()["error"], where
                    elif need is not None:  # a device's credential off the OTA routes
                        assert r.status_code == 403 and 'error="insufficient_scope"' in (www or ""), where
                else:  # right scope, admin: past the key check; what follows is the route's business
                    assert r.status_code not in (401, 429) and "insufficient_scope" not in (www or ""), where
                    assert r.status_code < 500, where  # an empty body or unknown model is the caller's fault
                seen.add((method, path, who))
    assert len(seen) == len(calls) * len(EXPECTED | {"wrong scope": 0, "right scope": 0, "admin": 0,
                                                      "other device kind": 0})


def test_the_servers_address_opens_the_browser_app(served):
    server, _, _ = served
    with server.client() as c:
        r = c.get("/")
        assert r.status_code == 307 and r.headers["location"] == "/app/"
        assert c.get("/", follow_redirects=True).url.path == "/app/"


def test_no_key_reaches_any_log(served):
    server, keys, records = served
    with server.client() as c:  # at least one call of each kind, in case the matrix ran elsewhere
        for header in credentials(keys, "predict").values():
            c.get("/v2", headers={"authorization": header} if header else {})
    deadline = time.monotonic() + 10  # access lines are written once the response is out
    while sum('"route": "/v2"' in line or '"route":"/v2"' in line for line in records.lines) < 10:
        assert time.monotonic() < deadline, "the access log did not record the calls"
        time.sleep(0.02)
    text = "\n".join(records.lines)
    for key in (keys.predict, keys.device, keys.admin, keys.revoked, keys.registered, HIDDEN):
        secret = key.split("_", 2)[2]  # the secret itself may hold "_"
        assert secret not in text and key not in text
    assert keys.predict.split("_")[1] in text  # the public key id is what identifies a key


def test_keys_are_compared_as_hashes_in_constant_time(tmp_path, monkeypatch):
    """The timing of a check must not tell how much of a secret matched, nor whether a key id
    exists: every check, known id or not, ends in one hmac.compare_digest of two sha256 digests."""
    settings = test_settings(tmp_path / "home")
    with Registry.open(settings) as reg:
        token, info = reg.create_key("predict", "timing")
        compared: list[tuple[str, str]] = []
        real = apikeys.hmac.compare_digest

        def spy(a: str, b: str) -> bool:
            compared.append((a, b))
            return real(a, b)

        monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
        secret = apikeys.parse(token).secret
        assert reg.verify_key(token) is not None
        assert reg.verify_key(f"tdm_{info.key_id}_{'A' * 43}") is None  # known id, wrong secret
        assert reg.verify_key(HIDDEN) is None  # unknown id: compared against a dummy hash all the same
        assert reg.verify_key("garbage") is None  # not a key at all: refused by its shape, nothing to compare
    assert len(compared) == 3
    for a, b in compared:
        assert re.fullmatch("[0-9a-f]{64}", a) and re.fullmatch("[0-9a-f]{64}", b)
        assert secret not in (a, b)
    assert compared[0][0] == compared[0][1] == apikeys.hash_secret(secret)


def _metric(text: str, name: str, reason: str) -> float:
    m = re.search(rf'^{name}{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_guessing_keys_from_one_address_is_slowed_down_and_counted(tmp_path):
    settings = test_settings(tmp_path / "home", auth_failures_burst=5, auth_failures_per_s=2.0,
                             metrics_public=True, trusted_proxies="127.0.0.1")  # the test speaks as its own proxy
    keys = populate(settings, [], production=None)
    with running(settings) as server, server.client() as c:
        for _ in range(10):  # no key at all is not a guess: counted, but never blocks
            assert c.get("/v2").status_code == 401
        for i in range(5):
            assert c.get("/v2", headers={"authorization": f"Bearer tdm_{i:012x}_{'y' * 43}"}).status_code == 401
        r = c.get("/v2", headers={"authorization": f"Bearer {HIDDEN}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert "too many failed API-key checks" in r.json()["error"]
        # Blocked: even a valid key from this address waits, so that guessing cannot test keys meanwhile.
        blocked = c.get("/v2", headers={"authorization": f"Bearer {keys.predict}"})
        assert blocked.status_code == 429
        # Another address (through a trusted proxy's X-Forwarded-For) is not affected.
        other = {"authorization": f"Bearer {keys.predict}", "x-forwarded-for": "10.1.2.3"}
        assert c.get("/v2", headers=other).status_code == 200
        time.sleep(float(blocked.headers["retry-after"]) + 0.1)
        assert c.get("/v2", headers={"authorization": f"Bearer {keys.predict}"}).status_code == 200
        text = c.get("/metrics").text
    assert _metric(text, "tandem_auth_failures_total", "missing_key") == 10
    assert _metric(text, "tandem_auth_failures_total", "invalid_token") == 6
    assert _metric(text, "tandem_auth_failures_total", "blocked") == 1
