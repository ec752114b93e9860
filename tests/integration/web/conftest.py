"""A real `tandem serve` with celebmatch released over the air, and Debian's Chromium driven by
Playwright (``executable_path``: Playwright downloads no browser here)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tandem.server.webapp import PACKAGED
from tandem.testing.bundles import make_face_bundle
from tandem.testing.processes import stop
from tandem.testing.served import serve
from tests.conftest import REPO, make_folder_dataset
from tests.integration.cli import tandem, tandem_json

PEOPLE = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder", "Donald_Rumsfeld"]
ARTIFACTS = REPO / "test-artifacts"


@dataclass
class WebServer:
    url: str
    device_key: str
    predict_key: str
    bundle: Path
    proc: subprocess.Popen = field(repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)  # the server's, for `tandem` commands on its registry

    def page_url(self) -> str:
        # Keys in the fragment: the fragment never reaches the server, and the page uses and stores
        # them only once the user confirms them on the page (open()).
        return f"{self.url}/app/#device={self.device_key}&predict={self.predict_key}&model=faces"

    def open(self, page: Page) -> None:
        """Open the page with the link's settings and accept them, as a user would."""
        page.goto(self.page_url())
        page.click("#link-accept")

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, lfw_people) -> Iterator[WebServer]:
    root = tmp_path_factory.mktemp("web")
    faces = make_folder_dataset(root / "faces", lfw_people, PEOPLE, 4)
    # A face-embedding bundle: the page aligns photos with the bundle's landmark network, as the server does.
    with web_server_for(make_face_bundle(root / "v1", faces, seed=1), root) as server:
        yield server


@contextlib.contextmanager
def web_server_for(bundle: Path, root: Path, name: str = "faces") -> Iterator[WebServer]:
    """`tandem serve` with ``bundle`` pushed as v1 of model ``name`` (the bundle's own name), aliased
    production and released on channel production, and a device key and a predict key for the page."""
    if not (PACKAGED / "index.html").is_file():
        pytest.fail(f"the browser app is not built ({PACKAGED} has no index.html): run `make install`")
    # The page registers as a device with the fleet's key (POST /v1/devices) and updates with its own
    # credential, as any device: the shared key alone gets no updates (no transition setting here).
    env = {**os.environ, "TANDEM_HOME": str(root / "home"), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_REDIS_URL": ""}
    for var in ("TANDEM_OTA_MASTER_KEY", "TANDEM_WEB_DIR", "TANDEM_OTA_SHARED_KEY_UPDATES"):
        env.pop(var, None)
    tandem("push", bundle, env=env)
    tandem("alias", name, "production", 1, env=env)
    tandem("release", name, 1, "--channel", "production", env=env)
    device_key = tandem_json("keys", "create", "--scope", "device", "--label", "browser", env=env)["key"]
    predict_key = tandem_json("keys", "create", "--scope", "predict", "--label", "browser", env=env)["key"]
    served = serve(env=env)
    server = WebServer(served.url, device_key, predict_key, bundle, served.proc, env)
    try:
        yield server
    finally:
        server.stop()


# Package scope, not session: Playwright's sync API keeps an event loop running in the main thread
# while it is open, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make install` (it runs apt-get install chromium)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. The fake media
        # flags give the page a webcam (Chromium's built-in test pattern) without asking.
        b = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
