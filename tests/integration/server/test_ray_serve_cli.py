"""`tandem serve --ray` as a user runs it, joining a running Ray cluster with --address: it deploys
the app on Ray Serve, answers, and when stopped deletes its app and leaves the cluster running. It is
stopped with SIGTERM, as systemd, Docker and Kubernetes stop it: Ray installs its own SIGTERM handler
(exit at once) when it connects, and this checks that SIGTERM stops it as Ctrl-C does, the same handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tandem.testing.processes import stop
from tandem.testing.served import wait_ready
from tests.integration.server.serving import populate, test_settings

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def test_serve_ray_deploys_answers_and_deletes_its_app_on_sigterm_as_on_ctrl_c(ray_cluster, tmp_path, bundles):
    from ray import serve

    settings = test_settings(tmp_path / "home")
    keys = populate(settings, list(bundles))
    port = ray_cluster.url.rsplit(":", 1)[1]  # the cluster's Ray Serve proxy
    env = {**os.environ, "TANDEM_HOME": str(settings.home), "TANDEM_DATABASE_URL": "", "TANDEM_ACCESS_LOG": "0",
           "TANDEM_RAY_REPLICA_CPUS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "tandem", "serve", "--ray", "--replicas", "1", "--address",
                             ray_cluster.address, "--port", port], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(ray_cluster.url, proc, "/v2/models/faces/ready", timeout_s=90,
                   headers={"authorization": f"Bearer {keys.predict}"})
        r = httpx.get(f"{ray_cluster.url}/v2/models/faces", headers={"authorization": f"Bearer {keys.predict}"})
        assert r.status_code == 200 and r.json()["versions"] == ["1", "2"]
    finally:
        out, _ = stop(proc, signal.SIGTERM, grace_s=60)
    assert proc.returncode == 0, out
    assert "serving on http://127.0.0.1:" in out and "through Ray Serve" in out
    assert "tandem" not in serve.status().applications  # its app is gone, the cluster and its proxy stay
