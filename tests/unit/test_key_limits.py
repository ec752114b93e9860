"""A key's own limits and expiry, below the registry: how people write an expiry (durations and ISO
8601), the bounds of a key's bucket, and the server's key check refusing an expired key even while
its record is cached."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tandem.errors import InvalidRequest, Unauthenticated
from tandem.registry.expiry import check_expiry, parse_expiry
from tandem.registry.keys import check_limits
from tandem.registry.records import KeyInfo
from tandem.server.auth import Authenticator

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "ahead"), [
    ("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)), ("30d", timedelta(days=30)),
    ("2w", timedelta(weeks=2)), ("1d12h", timedelta(days=1, hours=12)), ("45s", timedelta(seconds=45)),
    (" 30D ", timedelta(days=30)), ("1h30m", timedelta(minutes=90)),
])
def test_a_duration_counts_from_now(text, ahead):
    assert parse_expiry(text, NOW) == NOW + ahead


@pytest.mark.parametrize(("text", "expected"), [
    ("2027-01-31T18:00Z", datetime(2027, 1, 31, 18, 0, tzinfo=UTC)),
    ("2027-01-31T18:00:00+02:00", datetime(2027, 1, 31, 16, 0, tzinfo=UTC)),
    ("2027-01-31 18:00:00-05:00", datetime(2027, 1, 31, 23, 0, tzinfo=UTC)),
])
def test_an_iso_time_with_a_zone_is_that_moment(text, expected):
    got = parse_expiry(text, NOW)
    assert got == expected and got.tzinfo == UTC


def test_an_iso_date_or_time_without_a_zone_is_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30 all year: no daylight-saving edge
    time.tzset()
    try:
        assert parse_expiry("2027-01-31", NOW) == datetime(2027, 1, 30, 18, 30, tzinfo=UTC)  # midnight there
        assert parse_expiry("2027-01-31T18:00", NOW) == datetime(2027, 1, 31, 12, 30, tzinfo=UTC)
    finally:
        monkeypatch.undo()  # TZ as it was, and the C library told so
        time.tzset()


@pytest.mark.parametrize(("text", "says"), [
    ("tomorrow", "is not one: give a duration from now (90m, 12h, 30d, 2w"),
    ("30 days", "is not one"), ("-5d", "is not one"), ("", "is not one"), ("5x", "is not one"),
    ("2027-02-30", "is not one"), ("d", "is not one"), ("9" * 80, "is not one"),
    ("0d", "has already passed"), ("2026-12-03T11:59Z", "has already passed (now: 2026-12-03 12:00:00 UTC)"),
    ("2020-01-01", "has already passed"), ("999999999d", "more than 100 years away; leave it out"),
    ("9999-12-31T00:00Z", "more than 100 years away"),
])
def test_nonsense_and_past_times_are_refused_saying_what_to_give(text, says):
    with pytest.raises(InvalidRequest) as e:
        parse_expiry(text, NOW)
    assert says in str(e.value)


def test_a_given_expiry_must_be_aware_and_future():
    assert check_expiry(NOW + timedelta(seconds=1), NOW) == NOW + timedelta(seconds=1)
    with pytest.raises(InvalidRequest, match="names no time zone"):
        check_expiry(datetime(2027, 1, 1), NOW)
    with pytest.raises(InvalidRequest, match="has already passed"):
        check_expiry(NOW, NOW)


def test_a_keys_bucket_is_checked_and_a_rate_alone_gets_two_seconds_of_burst():
    assert check_limits(None, None) == (None, None)
    assert check_limits(5, None) == (5.0, 10)
    assert check_limits(0.1, None) == (0.1, 1)  # at least one request at once
    assert check_limits(5, 5) == (5.0, 5)
    assert check_limits(None, 7) == (None, 7)  # the server's default rate, this burst
    for rate in (0, -1, float("nan"), float("inf"), 2e6, True, "5"):
        with pytest.raises(InvalidRequest, match="give requests per second, more than 0 and at most 1,000,000"):
            check_limits(rate, None)
    for burst in (0, -3, 10**8, 2.5, True):
        with pytest.raises(InvalidRequest, match="a whole number from 1 to 10,000,000"):
            check_limits(None, burst)


def _key(expires: datetime | None) -> KeyInfo:
    return KeyInfo("0123456789ab", "predict", "test", NOW, expires=expires)


def test_an_expired_key_is_refused_with_its_own_message_and_reason():
    key = _key(datetime.now(UTC) - timedelta(seconds=1))
    assert key.expired(datetime.now(UTC)) and not _key(None).expired(datetime.now(UTC))
    auth = Authenticator(lambda _token: key, cache_s=300)
    with pytest.raises(Unauthenticated) as e:
        asyncio.run(auth.authenticate("Bearer tdm_0123456789ab_" + "x" * 43, "predict"))
    assert f"API key 0123456789ab expired at {key.expires:%Y-%m-%d %H:%M:%S} UTC" in str(e.value)
    assert "create a new one with `tandem keys create`" in str(e.value)
    assert e.value.challenge == ('Bearer realm="tandem", error="invalid_token", '  # type: ignore[attr-defined]
                                 'error_description="the API key expired"')
    assert e.value.reason == "expired_token"  # type: ignore[attr-defined]


def test_a_cached_check_does_not_keep_a_key_alive_past_its_expiry():
    key = _key(datetime.now(UTC) + timedelta(seconds=0.3))
    looked_up: list[str] = []

    def verify(token: str) -> KeyInfo:
        looked_up.append(token)
        return key

    auth = Authenticator(verify, cache_s=300)  # the record is trusted for 5 minutes
    header = "Bearer tdm_0123456789ab_" + "x" * 43

    async def main() -> None:
        assert (await auth.authenticate(header, "predict")) == key
        await asyncio.sleep(max(0.0, (key.expires - datetime.now(UTC)).total_seconds()) + 0.02)
        with pytest.raises(Unauthenticated, match="expired at"):
            await auth.authenticate(header, "predict")

    asyncio.run(main())
    assert len(looked_up) == 1  # refused from the cached record, not by asking the registry again
