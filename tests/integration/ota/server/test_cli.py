"""The OTA commands of the real `tandem` command line, in subprocesses: JSON out, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tandem.registry.ota.devices import Devices
from tandem.registry.registry import Registry
from tests.integration.cli import tandem, tandem_json
from tests.integration.registry_backends import Backend

pytestmark = pytest.mark.integration


def test_release_commands(tmp_path, ota_bundles):
    db = Backend("sqlite", tmp_path / "home", None)
    with Registry.open(db.settings()) as reg:
        for b in ota_bundles[:2]:
            reg.push(b)
    env = db.env()

    first = tandem_json("release", "faces", 1, "--channel", "production", env=env)
    assert (first["version"], first["state"], first["percent"]) == (1, "active", 100.0)
    assert first["created_signing_key"]["current"] is True  # the first release makes the signing key
    staged = tandem_json("release", "faces", 2, "--percent", "10", "--min-app-version", "2.3", "--platform", "android",
                         "--max-failure-rate", "0.05", "--min-devices", "30", env=env)
    assert (staged["percent"], staged["platforms"], staged["min_devices"]) == (10.0, ["android"], 30)
    assert staged["created_signing_key"] is None
    widened = tandem_json("release", "faces", 2, "--percent", "50", env=env)
    assert (widened["percent"], widened["min_app_version"], widened["max_failure_rate"]) == (50.0, "2.3", 0.05)
    assert tandem_json("pin", "faces", "tester-1", 1, env=env)["version"] == 1
    listing = tandem_json("releases", "faces", env=env)
    assert [(r["version"], r["state"]) for r in listing["releases"]] == [(2, "active"), (1, "active")]
    assert listing["releases"][0]["failure_rate"] == 0.0 and listing["pins"][0]["device_id"] == "tester-1"
    assert (listing["releases"][0]["devices"], listing["releases"][0]["failed_devices"]) == (0, 0)
    assert tandem_json("unpin", "faces", "tester-1", env=env)["device_id"] == "tester-1"
    assert tandem_json("release-halt", "faces", 2, env=env)["state"] == "halted"
    rolled = tandem_json("release-rollback", "faces", "--channel", "production", env=env)
    assert (rolled["version"], rolled["state"]) == (2, "rolled_back")
    text = tandem("releases", "faces", env=env).stdout
    assert "rolled_back" in text and "rolled back by hand to v1" in text

    for args, code, message in (
        (("release-rollback", "faces"), 9, "nothing to roll back to"),
        (("release", "faces", 9), 8, "model faces has no version 9"),
        (("release", "faces", 1, "--min-app-version", "two"), 7, "min_app_version 'two' is not a version"),
        (("release", "faces", 1, "--channel", "Beta"), 7, "not a valid channel name"),
        (("unpin", "faces", "nobody"), 8, "is not pinned"),
        (("keys", "signing", "create"), 9, "is already current; replace it with `tandem keys signing rotate`"),
    ):
        proc = tandem(*args, env=env, ok=False)
        assert proc.returncode == code and message in " ".join(proc.stderr.split()), (args, proc.stderr)


def test_signing_key_commands(tmp_path):
    env = Backend("sqlite", tmp_path / "home", None).env()
    assert tandem_json("keys", "signing", "list", env=env) == []
    first = tandem_json("keys", "signing", "create", env=env)
    # By default a rotation publishes the next key for a week before it signs.
    second = tandem_json("keys", "signing", "rotate", env=env)
    assert (second["state"], second["current"], second["endorsed_by"]) == ("next", False, first["key_id"])
    assert timedelta(days=6.9) < datetime.fromisoformat(second["activates"]) - datetime.now(UTC) < timedelta(days=7)
    again = tandem("keys", "signing", "rotate", env=env, ok=False)
    assert again.returncode == 9
    assert f"signing key {second['key_id']} is already next: it starts signing at" in " ".join(again.stderr.split())
    now = tandem("keys", "signing", "rotate", "--now", env=env)  # the waiting key starts at once
    assert f"started signing with waiting signing key {second['key_id']}" in now.stdout
    assert "no overlap: the new key signs at once" in " ".join(now.stderr.split())
    listed = tandem_json("keys", "signing", "list", env=env)
    assert [(k["key_id"], k["state"], k["current"]) for k in listed] == [
        (first["key_id"], "previous", False), (second["key_id"], "current", True)]
    assert tandem_json("keys", "signing", "retire", first["key_id"], env=env)["state"] == "retired"
    text = " ".join(tandem("keys", "signing", "list", env=env).stdout.split())
    assert second["key_id"] in text and "retired" in text and "current" in text


def test_device_commands(tmp_path):
    db = Backend("sqlite", tmp_path / "home", None)
    with Registry.open(db.settings()) as reg:
        key_id = reg.create_key("device", "phones")[1].key_id
        first, second = (Devices(reg).register(key_id)[1] for _ in range(2))
    env = db.env()
    listed = tandem_json("devices", "list", env=env)
    assert [(d["device_id"], d["enrolled_by"], d["revoked"]) for d in listed] == [
        (first.device_id, key_id, None), (second.device_id, key_id, None)]
    assert tandem_json("devices", "revoke", first.device_id, env=env)["revoked"] is not None
    assert [d["device_id"] for d in tandem_json("devices", "list", "--no-revoked", env=env)] == [second.device_id]
    assert first.device_id in tandem("devices", "list", env=env).stdout
    proc = tandem("devices", "revoke", "nope", env=env, ok=False)
    assert proc.returncode == 8 and "no registered device with id 'nope'" in proc.stderr
