"""OTA on a server over a PostgreSQL registry: devices register, then release, check, download, data key,
health reports (one per device), revocation; with the objects in a local folder, and in an S3 bucket (a
registry that servers on several machines can share)."""

from __future__ import annotations

import pytest

from tandem.registry.ota import Ota
from tandem.registry.ota.devices import Devices
from tandem.registry.registry import Registry
from tests.integration.ota.server.helpers import DeviceSide, new_env, synced
from tests.integration.registry_backends import postgres_schema

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["local", "s3"])
def test_ota_over_postgresql(tmp_path, ota_bundles, store, request):
    s3 = request.getfixturevalue("s3") if store == "s3" else None
    artifacts = s3.settings(s3.new_bucket()) if s3 is not None else {}
    with postgres_schema() as url:
        env = new_env(tmp_path / "home", ota_bundles[:2], database_url=url, key_cache_s=0, **artifacts)
        with env.ota() as ota:
            ota.releases.release("faces", 1)
            ota.releases.release("faces", 2, percent=100, max_failure_rate=0.5, min_devices=2)
        with env.server() as server:
            synced(server)
            with server.client(env.keys.device) as enrol:
                credentials = [enrol.post("/v1/devices").json()["credential"] for _ in range(3)]
            phones = [DeviceSide(server, c) for c in credentials]
            try:
                payload = phones[0].check(None, 1)
                assert (payload["version"], payload["action"]) == (2, "install")
                key = phones[0].data_key(None, 2)
                assert phones[0].download(payload["files"]["model.onnx"], key)
                assert "delta" in payload["files"]["model.onnx"]
                for phone in phones:
                    assert phone.report(None, 2, inferences=10).status_code == 204
                assert phones[0].report(None, 2, inferences=10, load_failures=1).status_code == 429
                assert phones[0].check(None, 2) is None
                with Registry.open(env.settings) as reg:
                    Devices(reg).revoke(payload["device_id"])
                assert phones[0].check_raw(None, 2).status_code == 401
            finally:
                for phone in phones:
                    phone.close()
        with Registry.open(env.settings) as reg:  # the reports were written, at the latest at shutdown
            [v2, _] = Ota(reg, env.settings).releases.releases("faces")
            registered = Devices(reg).registered(revoked=False)
        assert (v2.state, v2.health.devices, v2.health.failed_devices, v2.health.inferences) == ("active", 3, 0, 30)
        assert len(registered) == 3  # env's own, and two of the three here (one revoked)
