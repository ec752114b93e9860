"""A real uvicorn server in a thread on a free port, over a real registry."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from tritonclient._plugin import InferenceServerClientPlugin

from tandem.apps.base import App
from tandem.registry.ota.devices import Devices
from tandem.registry.registry import Registry
from tandem.server.app import create_app
from tandem.server.connections import protocol
from tandem.settings import Settings


@dataclass(frozen=True)
class Keys:
    predict: str
    device: str  # the fleet's device-scope API key: it registers devices (POST /v1/devices)
    admin: str
    revoked: str
    registered: str = ""  # a registered device's credential (tdd_…): what the OTA routes take
    train: str = ""  # managed training (POST /v1/trainings)


@dataclass(frozen=True)
class Running:
    url: str
    app: Starlette
    settings: Settings

    @property
    def host_port(self) -> str:  # what tritonclient wants
        return self.url.removeprefix("http://")

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


class Bearer(InferenceServerClientPlugin):
    """How a tritonclient user sends an API key with every call."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request) -> None:  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = f"Bearer {self.key}"


def test_settings(home: Path, **kw: object) -> Settings:
    # Pinned, so that TANDEM_* variables of the machine running the tests do not leak in.
    defaults: dict[str, object] = {"home": home, "database_url": None, "access_log": False, "alias_poll_s": 0.1,
                                   "redis_url": None, "max_delay_ms": 2.0, "max_batch_size": 8, "ort_threads": 0,
                                   "workers": 1, "metrics_public": False, "preload": True, "artifacts": None,
                                   # Tests send many bad keys on purpose; test_auth_matrix tests the guard.
                                   "auth_failures_burst": 100_000}
    return Settings(**{**defaults, **kw})


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


def populate(settings: Settings, bundles: list[Path], production: int | None = 1) -> Keys:
    """Push the bundles as versions 1.., point production at ``production``, create one key per scope."""
    with Registry.open(settings) as reg:
        for b in bundles:
            reg.push(b)
        if production is not None:
            reg.set_alias("faces", "production", production)
        keys = {scope: reg.create_key(scope, f"test {scope}")[0] for scope in ("predict", "device", "train", "admin")}
        revoked, info = reg.create_key("predict", "revoked")
        reg.revoke_key(info.key_id)
        registered = Devices(reg).register(keys["device"].split("_")[1])[0]
    return Keys(keys["predict"], keys["device"], keys["admin"], revoked, registered, keys["train"])


@contextlib.contextmanager
def running(settings: Settings, registry: Registry | None = None, apps: list[App] | None = None) -> Iterator[Running]:
    app = create_app(settings, registry, apps)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As `tandem serve` runs it: the guarded protocol, and forwarding headers left to the app (server/proxies.py).
    http = protocol(settings.header_timeout_s, settings.max_connections)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           http=http, proxy_headers=False, timeout_keep_alive=settings.keep_alive_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped during start-up; see the log above")
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start within 60 s")
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
