"""The OTA rollout rules (tandem.registry.ota.rollout): buckets, versions, targeting, pins, states, health gate."""

from __future__ import annotations

import hashlib

import pytest

from tandem.errors import InvalidRequest
from tandem.registry.ota.rollout import (
    Decision,
    Device,
    Health,
    Rule,
    bucket,
    covers,
    decide,
    gate_trips,
    offered,
    offers,
    parse_version,
)

IDS = [f"device-{i:04d}" for i in range(1000)]


def test_bucket_is_the_documented_hash():
    digest = hashlib.sha256(b"faces:production:abc").digest()
    assert bucket("faces", "production", "abc") == int.from_bytes(digest[:8], "big") % 10000 / 100
    assert 0 <= bucket("faces", "production", "abc") < 100
    # Model and channel are part of it: a device early in one rollout is not early in all of them.
    assert len({bucket("faces", "production", "abc"), bucket("faces", "beta", "abc"), bucket("x", "production", "abc")}) == 3


def test_widening_a_rollout_keeps_every_device_that_was_in():
    rules = lambda p: [Rule.of(1), Rule.of(2, percent=p)]
    gets_2 = lambda p, d: decide("faces", "production", rules(p), {}, Device(d, 1)) == Decision(2, "install")
    at = {p: {d for d in IDS if gets_2(p, d)} for p in (0, 10, 50, 100)}
    assert at[0] == set() and at[100] == set(IDS)
    assert at[10] <= at[50] <= at[100]
    assert at[10] == {d for d in IDS if bucket("faces", "production", d) < 10}
    # About the share asked for (binomial: 100 ± 5 standard deviations of 9.5).
    assert 50 < len(at[10]) < 150 and 400 < len(at[50]) < 600


@pytest.mark.parametrize(("low", "high"), [
    ("2.4", "2.4.0"), ("2.4.0", "v2.4"), ("1.9", "1.10"), ("3.0rc1", "3.0"), ("3.0.dev2", "3.0a1"),
    ("3.0a1", "3.0b1"), ("3.0b2", "3.0rc1"), ("2.4", "2.4.post1"), ("2.4.0-beta.3", "2.4.0"), ("17.2", "17.2.1"),
    ("2.4.0+build.7", "2.4.1"),
])
def test_versions_compare_by_their_numbers(low, high):
    a, b = parse_version(low), parse_version(high)
    if (low in ("2.4",) and high == "2.4.0") or (low, high) == ("2.4.0", "v2.4"):
        assert a == b and hash(a) == hash(b)
    else:
        assert a < b and b > a and a != b


@pytest.mark.parametrize("bad", ["", "x", "2.x", "1..2", "2.4 beta", "-1", "1." * 20, None, 7, "9" * 12])
def test_unparsable_versions_are_a_clear_400(bad):
    with pytest.raises(InvalidRequest, match=r"is not a version: use numbers separated by dots") as e:
        parse_version(bad, "app_version")
    assert e.value.status_code == 400 and "app_version" in str(e.value)


def test_targeting_needs_every_rule_met_and_stated():
    rule = Rule.of(2, min_app_version="2.3", max_app_version="3.0", platforms=["Android"], min_os_version="12",
                   min_ram_mb=2048)
    ok = dict(platform="android", os_version="14", app_version="2.4.0", ram_mb=4096)
    assert covers(rule, "faces", "production", Device.parse("d", **ok))
    assert covers(rule, "faces", "production", Device.parse("d", **{**ok, "app_version": "3.0.0"}))  # max is inclusive
    assert covers(rule, "faces", "production", Device.parse("d", **{**ok, "platform": "ANDROID"}))
    for change in ({"app_version": "2.2.9"}, {"app_version": "3.0.1"}, {"platform": "ios"}, {"os_version": "11.4"},
                   {"ram_mb": 2047}, {"app_version": None}, {"platform": None}, {"os_version": None},
                   {"ram_mb": None}):
        assert not covers(rule, "faces", "production", Device.parse("d", **{**ok, **change})), change


def test_a_device_not_covered_falls_back_to_an_older_release():
    rules = [Rule.of(1), Rule.of(2, min_app_version="2.3"), Rule.of(3, min_app_version="2.5", state="halted")]
    assert decide("m", "c", rules, {}, Device.parse("d", None, app_version="2.4")) == Decision(2, "install")
    assert decide("m", "c", rules, {}, Device.parse("d", None, app_version="2.0")) == Decision(1, "install")
    assert decide("m", "c", [], {}, Device("d")) is None


def test_pins_win_and_a_lower_version_is_a_rollback():
    rules = [Rule.of(1), Rule.of(2)]
    assert decide("m", "c", rules, {"d": 1}, Device("d", 2)) == Decision(1, "rollback", pinned=True)
    assert decide("m", "c", rules, {"d": 1}, Device("d", None)) == Decision(1, "install", pinned=True)
    assert decide("m", "c", rules, {"other": 1}, Device("d", 2)) == Decision(2, "install")


def test_halted_keeps_its_devices_and_takes_no_new_ones():
    rules = [Rule.of(1), Rule.of(2, state="halted")]
    assert decide("m", "c", rules, {}, Device("d", 2)) == Decision(2, "install")  # the same version: nothing to do
    assert decide("m", "c", rules, {}, Device("d", 1)) == Decision(1, "install")
    assert decide("m", "c", rules, {}, Device("d", None)) == Decision(1, "install")


def test_a_rolled_back_release_is_left_by_everyone():
    rules = [Rule.of(1), Rule.of(2, state="rolled_back")]
    back = decide("m", "c", rules, {}, Device("d", 2))
    assert back == Decision(1, "rollback") and back.reason == "rolled_back"
    assert decide("m", "c", [Rule.of(2, state="rolled_back")], {}, Device("d", 2)) is None
    assert decide("m", "c", rules, {"d": 1}, Device("d", 2)).reason == "pin"


def test_a_downgrade_is_signed_only_when_the_server_recorded_one():
    """A device that claims a newer version than its releases offer, or an app version the newest release
    does not cover, is not sent back: nothing was rolled back or pinned, so it stays, and no key is given
    for the version it claims."""
    rules = [Rule.of(1), Rule.of(2, min_app_version="3.0")]
    old_app = Device.parse("d", 2, app_version="2.0")  # really on v2? Its word only: no rollback for it
    stay = decide("m", "c", rules, {}, old_app)
    assert (stay.version, stay.action, stay.reason) == (2, "stay", "no_recorded_rollback")
    assert not offers("m", "c", rules, {}, old_app, 2) and offers("m", "c", rules, {}, old_app, 1)
    claims_v9 = Device("d", 9)
    assert decide("m", "c", [Rule.of(1)], {}, claims_v9) == Decision(9, "stay")
    assert not offers("m", "c", [Rule.of(1)], {}, claims_v9, 9)


def test_keys_are_offered_for_covered_pinned_and_kept_versions():
    rules = [Rule.of(1), Rule.of(2, percent=0), Rule.of(3, state="halted"), Rule.of(4, state="rolled_back")]
    dev = Device("d")
    assert offers("m", "c", rules, {}, dev, 1)
    assert not offers("m", "c", rules, {}, dev, 2)  # outside the rollout
    assert offers("m", "c", rules, {}, dev, 3)  # a halted release keeps the devices that have it
    assert not offers("m", "c", rules, {}, dev, 4)
    assert not offers("m", "c", rules, {}, dev, 5)
    assert offers("m", "c", rules, {"d": 2}, dev, 2)


def test_reports_count_from_devices_a_release_or_pin_ever_covered():
    rules = [Rule.of(1), Rule.of(2, percent=0), Rule.of(3, state="halted"), Rule.of(4, state="rolled_back"),
             Rule.of(5, platforms=["ios"])]
    dev = Device("d", platform="android")
    assert offered("m", "c", rules, {}, dev, 1)
    assert not offered("m", "c", rules, {}, dev, 2)  # outside the rollout: its word on v2 does not count
    assert offered("m", "c", rules, {}, dev, 3) and offered("m", "c", rules, {}, dev, 4)  # whatever the state
    assert not offered("m", "c", rules, {}, dev, 5)  # another platform's release
    assert not offered("m", "c", rules, {}, dev, 6)  # no release at all
    assert offered("m", "c", rules, {"d": 2}, dev, 2) and not offered("m", "c", rules, {"e": 2}, dev, 2)


def test_the_health_gate_needs_enough_devices_and_a_failure_rate_over_them():
    assert not gate_trips(0.1, 20, Health(devices=19, failed_devices=19))  # too few devices, however bad
    assert gate_trips(0.1, 20, Health(devices=20, failed_devices=3))
    assert not gate_trips(0.1, 20, Health(devices=20, failed_devices=2))  # exactly 10% is allowed
    assert not gate_trips(0.1, 20, Health(devices=1000, failed_devices=100))  # a count is not a rate
    assert not gate_trips(None, 1, Health(devices=100, failed_devices=100))
    assert gate_trips(0.0, 1, Health(devices=1, failed_devices=1))
    assert not gate_trips(0.0, 0, Health())  # nobody reported: nothing to judge
    assert Health().failure_rate == 0.0 and Health(4, 1).failure_rate == 0.25
