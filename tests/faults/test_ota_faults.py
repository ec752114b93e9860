"""Fault injection on the over-the-air path: the server killed during a device's download, the
device's process killed at every step of an install (the delta rebuild among them), and a device
whose storage fills up. The device must open the model it ran or the new one, never a broken one,
and the next update must land (tests/faults/ota_faults.py)."""

from __future__ import annotations

import pytest

from tests.faults import ota_faults

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with ota_faults.ota_rig(tmp_path_factory.mktemp("ota-faults")) as r:
        yield r


def test_the_server_killed_mid_download_leaves_the_device_on_its_model_and_the_update_resumes(rig, tmp_path):
    assert ota_faults.server_killed_during_download(rig, tmp_path) == []


@pytest.mark.parametrize("step", ota_faults.DEVICE_STEPS)
def test_a_device_killed_at_any_install_step_opens_the_old_or_new_model(rig, tmp_path, step):
    assert ota_faults.device_killed(rig, tmp_path, step) == []


def test_a_full_device_gets_a_clear_error_and_keeps_its_model(rig, tmp_path):
    problems = ota_faults.device_storage_full(rig, tmp_path)
    if problems is None:
        pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN)")
    assert problems == []
