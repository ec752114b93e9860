"""The red-team suite (issue 14): each test is one attack, replayed against a real `tandem serve` on a
real port (and a real Chromium for the page), and marked with the class of hole it keeps closed:

- ``browser``: hostile pages and data shown in them (markup from a gallery, a link, a server's error;
  the page as a device).
- ``device_identity``: hostile devices (speaking for another device, forged or repeated health reports,
  the fleet's key, models outside a key's scope).
- ``network``: an attacker between device and server, or a hostile server (replayed, cross-device,
  expired and downgrading answers, unsigned "nothing new", huge answers, spoofed forwarding headers).
- ``resources``: one client's hold on the server (half-open sockets, idle connections, slow requests,
  decode bombs, degenerate photos).
- ``artifacts``: hostile bundles and archives (manifest paths, archive sizes).

``bench/security.py`` runs it and writes bench/results/security.json from what these hooks record when
TANDEM_SECURITY_REPORT names a file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tandem.bundle import Bundle, write_manifest
from tandem.testing.bundles import make_bundle
from tests.conftest import make_folder_dataset
from tests.integration.ota.server.helpers import head_update

CLASSES = ("browser", "device_identity", "network", "resources", "artifacts")
REPORT = "TANDEM_SECURITY_REPORT"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        marker = item.get_closest_marker("redteam")
        if marker is None or not marker.args or marker.args[0] not in CLASSES:
            raise pytest.UsageError(f"{item.nodeid}: every test of the red-team suite is marked "
                                    f"@pytest.mark.redteam(CLASS), CLASS one of {CLASSES}")


def _record(entry: dict) -> None:
    path = os.environ.get(REPORT)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("redteam")
    if marker is None or HERE not in Path(str(item.fspath)).parents:
        return
    # One record per case: its call's outcome, or the setup's if the setup failed (the attack never ran).
    if report.when == "call" or (report.when == "setup" and not report.passed):
        name = f"{Path(str(item.fspath)).stem}::{item.name}"
        _record({"name": name, "class": marker.args[0], "passed": report.passed})


@pytest.fixture(scope="session")
def figures():
    """Record a measured figure for bench/security.py (``figures("name", value)``)."""

    def record(name: str, value: float) -> None:
        _record({"figure": name, "value": value})

    return record


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """Tiny real bundles without a gallery: faces v1, faces v2 (a new classifier head), and model "secret"."""
    root = tmp_path_factory.mktemp("red-team-bundles")
    v1 = make_bundle(root / "v1", None, seed=1)
    secret = root / "secret"
    shutil.copytree(v1, secret)
    write_manifest(secret, Bundle.load(secret).manifest.model_copy(update={"name": "secret"}))
    return {"v1": v1, "v2": head_update(v1, root / "v2", seed=2), "secret": secret}


@pytest.fixture(scope="session")
def gallery_bundle(tmp_path_factory, lfw_people) -> Path:
    """A tiny real bundle of model "faces" enrolled for celebmatch on a few LFW people."""
    root = tmp_path_factory.mktemp("red-team-gallery")
    faces = make_folder_dataset(root / "faces", lfw_people, ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"], 3)
    return make_bundle(root / "v1", faces, seed=1)
