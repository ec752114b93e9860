"""The registry's OTA side on SQLite and PostgreSQL: release changes, states, pins, health over distinct
devices and the gate, objects made once, signing keys, and the master key that wraps every secret."""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from tandem.errors import ConfigError, Conflict, InvalidRequest, NotFound
from tandem.registry.ota import Ota
from tandem.registry.ota.keys import MASTER_KEY_FILE, master_key
from tandem.registry.ota.releases import DeviceReport, Releases
from tandem.registry.registry import Registry
from tandem.security import endorsement
from tandem.security.signing import PublicKey
from tandem.settings import Settings
from tests.integration.registry_backends import backend

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def ota(request, tmp_path, ota_bundles):
    with backend(request.param, tmp_path / "home") as db:
        settings = db.settings()
        with Registry.open(settings) as reg:
            for b in ota_bundles:
                reg.push(b)
            yield Ota(reg, settings)


def test_a_release_change_keeps_what_it_does_not_name(ota):
    gen = ota.reg.generation()
    r = ota.releases.release("faces", 2, "beta", percent=10, min_app_version="2.3", platforms=["Android", "ios"],
                             max_failure_rate=0.05)
    assert (r.percent, r.min_app_version, r.platforms, r.max_failure_rate, r.min_devices, r.state) == (
        10.0, "2.3", ("android", "ios"), 0.05, 20, "active")
    r = ota.releases.release("faces", 2, "beta", percent=50.004)
    assert (r.percent, r.min_app_version, r.platforms, r.max_failure_rate) == (50.0, "2.3", ("android", "ios"), 0.05)
    r = ota.releases.release("faces", 2, "beta", min_app_version="", platforms=[], no_health_gate=True)
    assert (r.min_app_version, r.platforms, r.max_failure_rate) == (None, (), None)
    assert ota.reg.generation() == gen + 4  # three releases, and the first signing key
    assert [x.version for x in ota.releases.releases("faces")] == [2]
    assert ota.releases.releases("faces", "production") == []


def test_states_move_as_documented(ota):
    ota.releases.release("faces", 1)
    ota.releases.release("faces", 2)
    assert ota.releases.halt("faces", 2).state == "halted"
    gen = ota.reg.generation()
    assert ota.releases.halt("faces", 2).state == "halted" and ota.reg.generation() == gen  # no change, no bump
    rolled = ota.releases.rollback("faces")
    assert (rolled.version, rolled.state, rolled.note) == (2, "rolled_back", "rolled back by hand to v1")
    with pytest.raises(Conflict, match="rolled back already; release it again"):
        ota.releases.halt("faces", 2)
    with pytest.raises(Conflict, match="v1 is the only release on production, so there is nothing to roll back"):
        ota.releases.rollback("faces")
    with pytest.raises(NotFound, match="no active or halted release on channel 'beta'"):
        ota.releases.rollback("faces", "beta")
    ota.releases.record_health({("faces", 2, "production"): {"d": DeviceReport(load_failures=1)}})
    assert ota.releases.releases("faces")[0].health.devices == 1
    again = ota.releases.release("faces", 2)  # released again: active, with fresh health counts
    assert (again.state, again.note, again.health.reports, again.health.devices) == ("active", "", 0, 0)
    ota.releases.record_health({("faces", 2, "production"): {"d": DeviceReport()}})
    assert ota.releases.releases("faces")[0].health.devices == 1  # the device's old row went with the counts
    with pytest.raises(NotFound, match=r"faces v3 is not released on channel 'production' \(releases there: v2"):
        ota.releases.halt("faces", 3)


def test_pins(ota):
    ota.releases.release("faces", 2)
    gen = ota.reg.generation()
    p = ota.releases.pin("faces", "tester-1", 1)
    assert (p.device_id, p.version, p.channel) == ("tester-1", 1, "production")
    assert ota.releases.pin("faces", "tester-1", 1) == p and ota.reg.generation() == gen + 1
    assert ota.releases.pin("faces", "tester-1", 3).version == 3
    assert [(x.device_id, x.version) for x in ota.releases.pins("faces")] == [("tester-1", 3)]
    assert ota.releases.unpin("faces", "tester-1").version == 3
    with pytest.raises(NotFound, match="device 'tester-1' is not pinned"):
        ota.releases.unpin("faces", "tester-1")
    with pytest.raises(InvalidRequest, match="is not a valid device id"):
        ota.releases.pin("faces", "two words", 1)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"percent": 150}, InvalidRequest, "percent 150 is not between 0 and 100"),
    ({"percent": float("nan")}, InvalidRequest, "is not between 0 and 100"),
    ({"min_app_version": "two"}, InvalidRequest, "min_app_version 'two' is not a version"),
    ({"min_app_version": "3.0", "max_app_version": "2.9"}, InvalidRequest, "min_app_version 3.0 is above"),
    ({"platforms": ["and roid"]}, InvalidRequest, "is not a platform name"),
    ({"min_ram_mb": -1}, InvalidRequest, "min_ram_mb -1 is not a whole number"),
    ({"max_failure_rate": 1.5}, InvalidRequest, "is not a share from 0 to below 1"),
    ({"max_failure_rate": 0.1, "no_health_gate": True}, InvalidRequest, "either --no-health-gate"),
    ({"min_devices": 0}, InvalidRequest, "min_devices 0 is not a whole number of devices from 1"),
    ({"channel": "Prod!"}, InvalidRequest, "not a valid channel name"),
    ({"version": 9}, NotFound, r"model faces has no version 9 \(versions: 1, 2, 3\)"),
    ({"name": "nope"}, NotFound, "no model named 'nope'"),
])
def test_invalid_releases_are_refused_before_anything_is_written(ota, kwargs, error, message):
    args = {"name": "faces", "version": 2, **kwargs}
    gen = ota.reg.generation()
    with pytest.raises(error, match=message):
        ota.releases.release(**args)
    assert ota.releases.releases("faces") == [] and ota.reg.generation() == gen


OK = DeviceReport(0, 0, 100, 3.0, 10.0)
BAD = DeviceReport(0, 5, 100, 4.0, 30.0)
KEY2 = ("faces", 2, "production")


def test_health_counts_each_device_once_and_the_gate_rolls_back(ota):
    ota.releases.release("faces", 1)
    ota.releases.release("faces", 2, max_failure_rate=0.25, min_devices=4)
    assert ota.releases.record_health({KEY2: {"a": OK, "b": OK, "c": BAD}}) == []  # 3 devices: too few
    gen = ota.reg.generation()
    [tripped] = ota.releases.record_health({KEY2: {"d": BAD},
                                            ("faces", 1, "production"): {"a": OK},
                                            ("faces", 3, "production"): {"a": BAD}})  # no release of v3: dropped
    assert (tripped.version, tripped.state) == (2, "rolled_back") and ota.reg.generation() == gen + 1
    assert "2 of 4 devices failed (50.0% > 25.0%)" in tripped.note
    h = tripped.health
    assert (h.reports, h.devices, h.failed_devices, h.inference_errors, h.inferences) == (4, 4, 2, 10, 400)
    assert (h.p50_ms_mean, h.p99_ms_mean, h.p99_ms_max) == (pytest.approx(3.5), pytest.approx(20.0), 30.0)
    assert [r.health.devices for r in ota.releases.releases("faces")] == [4, 1]


def test_a_later_report_from_a_device_replaces_its_earlier_one(ota):
    ota.releases.release("faces", 2, max_failure_rate=0.5, min_devices=3)
    ota.releases.record_health({KEY2: {"a": BAD, "b": OK}})
    ota.releases.record_health({KEY2: {"a": dataclasses.replace(OK, reports=3)}})  # a recovered, said so 3 times
    [r] = ota.releases.releases("faces")
    h = r.health
    assert (h.reports, h.devices, h.failed_devices, h.inference_errors, h.inferences) == (5, 2, 0, 0, 200)
    assert (h.p50_ms_mean, h.p99_ms_mean, h.p99_ms_max) == (pytest.approx(3.0), pytest.approx(10.0), 30.0)
    ota.releases.record_health({KEY2: {"b": DeviceReport(load_failures=1)}})  # b fails now, with no latency
    h = ota.releases.releases("faces")[0].health
    assert (h.devices, h.failed_devices, h.load_failures, h.p99_ms_mean) == (2, 1, 1, pytest.approx(10.0))


def test_forged_duplicates_from_one_device_cannot_trip_the_gate(ota):
    ota.releases.release("faces", 2, max_failure_rate=0.1, min_devices=5)
    ota.releases.record_health({KEY2: {f"ok-{i}": OK for i in range(9)}})
    for _ in range(50):  # one device, one vote, however often it says so
        assert ota.releases.record_health({KEY2: {"liar": DeviceReport(load_failures=1, reports=20)}}) == []
    [r] = ota.releases.releases("faces")
    assert (r.state, r.health.devices, r.health.failed_devices, r.health.reports) == ("active", 10, 1, 1009)
    assert r.health.failure_rate == pytest.approx(0.1)  # 10% is allowed; a second failing device is not:
    [tripped] = ota.releases.record_health({KEY2: {"ok-0": BAD}})
    assert "2 of 10 devices failed" in tripped.note


def test_a_flood_of_clean_reports_from_one_device_cannot_hide_failures(ota):
    ota.releases.release("faces", 2, max_failure_rate=0.2, min_devices=5)
    for _ in range(50):
        ota.releases.record_health({KEY2: {"flooder": dataclasses.replace(OK, reports=100)}})
    assert ota.releases.releases("faces")[0].state == "active"
    [tripped] = ota.releases.record_health({KEY2: {f"real-{i}": BAD for i in range(4)}})
    assert (tripped.state, tripped.health.devices, tripped.health.failed_devices) == ("rolled_back", 5, 4)


def test_the_gate_default_comes_from_the_setting(ota):
    assert ota.releases.release("faces", 1).min_devices == 20
    other = Releases(ota.reg, ota.keys, ota.objects, min_devices=7)  # as Ota makes it from TANDEM_OTA_GATE_MIN_DEVICES
    assert other.release("faces", 2).min_devices == 7
    assert ota.releases.release("faces", 2, percent=50).min_devices == 7  # a change keeps it
    assert ota.releases.release("faces", 2, min_devices=3).min_devices == 3


def test_objects_are_made_once_and_data_keys_kept(ota):
    first = ota.objects.prepare("faces", 2, [1])
    assert {(o.kind, o.path) for o in first} == {("file", "model.onnx"), ("delta", "model.onnx")}
    same = Settings(home=ota.reg.home)  # the fixture's settings (the master key), less the database URL Ota never reads
    again = Ota(ota.reg, same).objects.prepare("faces", 2, [1])
    assert again == first  # the recorded objects, not new encryptions
    assert ota.keys.data_key("faces", 2) == Ota(ota.reg, same).keys.data_key("faces", 2)
    assert ota.keys.data_key("faces", 1) != ota.keys.data_key("faces", 2)


def test_signing_key_life_cycle(ota):
    assert ota.keys.signing_keys() == []
    first = ota.keys.create_signing_key()
    with pytest.raises(Conflict, match=f"signing key {first.key_id} is already current; replace it with"):
        ota.keys.create_signing_key()
    second = ota.keys.rotate_signing_key(overlap=timedelta(0))
    with pytest.raises(Conflict, match="is the current one; rotate to a new key first"):
        ota.keys.retire_signing_key(second.key_id)
    with pytest.raises(NotFound, match="no signing key with id 'nope'"):
        ota.keys.retire_signing_key("nope")
    assert ota.keys.retire_signing_key(first.key_id).retired is not None
    assert [(k.key_id, k.current, k.retired is None) for k in ota.keys.signing_keys()] == [
        (first.key_id, False, False), (second.key_id, True, True)]
    snap = ota.snapshot()
    assert snap.signer is not None and snap.signer.public.key_id == second.key_id


def test_a_rotation_publishes_the_next_key_endorsed_and_activates_it_once_due(ota):
    first = ota.keys.create_signing_key()
    t0 = datetime.now(UTC)
    nxt = ota.keys.rotate_signing_key(overlap=timedelta(hours=1))
    assert (nxt.state, nxt.current, nxt.activated, nxt.endorsed_by) == ("next", False, None, first.key_id)
    assert t0 + timedelta(minutes=59) < nxt.activates < t0 + timedelta(minutes=61)
    with pytest.raises(Conflict, match=f"signing key {nxt.key_id} is already next: it starts signing at .*--now"):
        ota.keys.rotate_signing_key(overlap=timedelta(hours=1))
    snap = ota.snapshot()
    assert snap.signer is not None and snap.signer.public.key_id == first.key_id  # the old key signs until then
    [vouched] = snap.endorsements  # the current key vouches for the next one: how devices learn it
    learned = endorsement.read(vouched, PublicKey.from_b64(first.public_key))
    assert (learned.key.key_id, learned.endorsed_by) == (nxt.key_id, first.key_id)
    assert ota.keys.activate_due() is None  # not yet
    gen = ota.reg.generation()
    # Several servers notice at once: one promotes, the others find nothing due.
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: ota.keys.activate_due(t0 + timedelta(hours=2)), range(4)))
    assert [d.key_id for d in done if d is not None] == [nxt.key_id]
    assert ota.reg.generation() > gen  # servers load the new signer
    assert [(k.key_id, k.state) for k in ota.keys.signing_keys()] == [(first.key_id, "previous"),
                                                                       (nxt.key_id, "current")]
    snap = ota.snapshot()
    assert snap.signer is not None and snap.signer.public.key_id == nxt.key_id
    assert [e["key_id"] for e in snap.endorsements] == [first.key_id]  # still served: late devices follow
    # --now (overlap 0) starts a waiting key at once; a retired next key never starts.
    third = ota.keys.rotate_signing_key(overlap=timedelta(days=7))
    assert ota.keys.rotate_signing_key(overlap=timedelta(0)).key_id == third.key_id
    fourth = ota.keys.rotate_signing_key(overlap=timedelta(days=7))
    assert [e["key_id"] for e in ota.snapshot().endorsements] == [first.key_id, nxt.key_id, third.key_id]
    assert ota.keys.retire_signing_key(fourth.key_id).state == "retired"
    assert ota.keys.activate_due(t0 + timedelta(days=30)) is None
    assert [(k.key_id, k.state) for k in ota.keys.signing_keys()] == [
        (first.key_id, "previous"), (nxt.key_id, "previous"), (third.key_id, "current"), (fourth.key_id, "retired")]
    # A next key called off is vouched for no more; a retired key that signed keeps its place in the chain, so
    # that a device trusting only the oldest key still reaches the current one.
    ota.keys.retire_signing_key(first.key_id)
    assert [e["key_id"] for e in ota.snapshot().endorsements] == [first.key_id, nxt.key_id]


def test_the_master_key_file_is_private_and_shared(tmp_path):
    with ThreadPoolExecutor(8) as pool:  # first use from several workers at once: one key
        keys = set(pool.map(lambda _: master_key(tmp_path, None), range(8)))
    assert len(keys) == 1 and len(keys.pop()) == 32
    path = tmp_path / MASTER_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [MASTER_KEY_FILE]  # no temporary file left behind
    configured = base64.b64encode(os.urandom(32)).decode()
    assert master_key(tmp_path, SecretStr(configured)) == base64.b64decode(configured)
    for bad, message in (("not base64!", "is not valid base64"), (base64.b64encode(b"short").decode(), "holds 5 bytes")):
        with pytest.raises(ConfigError, match=f"TANDEM_OTA_MASTER_KEY {message}"):
            master_key(tmp_path, SecretStr(bad))


def test_another_master_key_cannot_unwrap_the_secrets(tmp_path, ota_bundles):
    settings = Settings(home=tmp_path / "home", database_url=None, ota_master_key=None)  # the key file
    with Registry.open(settings) as reg:
        reg.push(ota_bundles[0])
        Ota(reg, settings).releases.release("faces", 1)
        other = settings.model_copy(update={"ota_master_key": SecretStr(base64.b64encode(os.urandom(32)).decode())})
        with pytest.raises(ConfigError, match=r"wrapped with another one\. Every server and CLI of a registry must use"):
            Ota(reg, other).snapshot()
