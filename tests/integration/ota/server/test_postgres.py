"""OTA on a server over a PostgreSQL registry: release, check, download, data key, health reports."""

from __future__ import annotations

import pytest

from tandem.registry.ota import Ota
from tandem.registry.registry import Registry
from tests.integration.ota.server.helpers import DeviceSide, new_env, synced
from tests.integration.registry_backends import postgres_schema

pytestmark = pytest.mark.integration


def test_ota_over_postgresql(tmp_path, ota_bundles):
    with postgres_schema() as url:
        env = new_env(tmp_path / "home", ota_bundles[:2], database_url=url)
        with env.ota() as ota:
            ota.releases.release("faces", 1)
            ota.releases.release("faces", 2, percent=100, max_failure_rate=0.5, min_devices=2)
        with env.server() as server:
            synced(server)
            device = DeviceSide(server, env.keys.device)
            try:
                payload = device.check("phone", 1)
                assert (payload["version"], payload["action"]) == (2, "install")
                key = device.data_key("phone", 2)
                assert device.download(payload["files"]["model.onnx"], key)
                assert "delta" in payload["files"]["model.onnx"]
                for i in range(3):
                    assert device.report(f"phone-{i}", 2, inferences=10).status_code == 204
                assert device.report("phone-0", 2, inferences=10, load_failures=1).status_code == 429
                assert device.check("phone", 2) is None
            finally:
                device.close()
        with Registry.open(env.settings) as reg:  # the reports were written, at the latest at shutdown
            [v2, _] = Ota(reg, env.settings).releases.releases("faces")
        assert (v2.state, v2.health.devices, v2.health.failed_devices, v2.health.inferences) == ("active", 3, 0, 30)
