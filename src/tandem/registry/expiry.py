"""When an API key stops working, as people write it: a duration from now (``90m``, ``12h``, ``30d``,
``2w``, or parts together, ``1d12h``) or an ISO 8601 date or time (``2027-01-31``,
``2027-01-31T18:00``, ``2027-01-31T18:00:00+02:00``, ``…Z``). A date or time that names no zone is
this machine's local time, the clock the person typing it reads; a date alone is the midnight that
starts that day. What comes back is an aware UTC time, always in the future."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tandem.errors import InvalidRequest

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"(?:\d{1,9}[smhdw])+", re.IGNORECASE)
_PART = re.compile(r"(\d+)([smhdw])", re.IGNORECASE)
# Far enough for any real key; a typo of a few more digits is caught rather than stored.
MAX_AHEAD = timedelta(days=100 * 365)
FORMS = ("a duration from now (90m, 12h, 30d, 2w; parts together: 1d12h) or an ISO 8601 date or time "
         "(2027-01-31, 2027-01-31T18:00, 2027-01-31T18:00Z; no zone: this machine's local time)")


def duration_seconds(text: str) -> int | None:
    """The seconds of a duration as people write it (``90m``, ``12h``, ``30d``, ``2w``, ``1d12h``), or None
    when ``text`` is not one. Also read by `tandem keys signing rotate --overlap`."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * UNITS[unit.lower()] for n, unit in _PART.findall(text))


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """The aware UTC time ``text`` names; InvalidRequest if it is neither form, or not in the future."""
    now = now or datetime.now(UTC)
    given = text.strip() if isinstance(text, str) else ""
    if not given or len(given) > 64:
        raise InvalidRequest(f"expiry {text!r:.80} is not one: give {FORMS}")
    seconds = duration_seconds(given)
    if seconds is not None:
        if seconds > MAX_AHEAD.total_seconds():
            raise InvalidRequest(f"expiry {given!r} is more than 100 years away; leave it out for a key that does "
                                 "not expire")
        return check_expiry(now + timedelta(seconds=seconds), now, given)
    try:
        when = datetime.fromisoformat(given)
        # A naive time is local time (astimezone's reading of one); out of range near year 1 or 9999.
        when = when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"expiry {given!r} is not one: give {FORMS}") from None
    return check_expiry(when, now, given)


def check_expiry(when: datetime, now: datetime | None = None, given: str | None = None) -> datetime:
    """``when`` as an aware UTC time, if it is in the future and within MAX_AHEAD; InvalidRequest otherwise."""
    now = now or datetime.now(UTC)
    said = f"expiry {given!r} ({when:%Y-%m-%d %H:%M:%S %Z})" if given else f"expiry {when.isoformat()}"
    if when.tzinfo is None:
        raise InvalidRequest(f"{said} names no time zone; give an aware time (UTC, say)")
    when = when.astimezone(UTC)
    if when <= now:
        raise InvalidRequest(f"{said} has already passed (now: {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC); give a "
                             "future time, or a duration such as 30d")
    if when - now > MAX_AHEAD:
        raise InvalidRequest(f"{said} is more than 100 years away; leave it out for a key that does not expire")
    return when
