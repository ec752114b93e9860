"""Range and If-None-Match parsing of the OTA download routes (RFC 9110)."""

from __future__ import annotations

import pytest

from tandem.server.ota.downloads import etag_matches, parse_range

SHA = "ab" * 32


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 100, None),
    ("bytes=0-", 100, (0, 99)),
    ("bytes=50-", 100, (50, 99)),
    ("bytes=10-19", 100, (10, 19)),
    ("bytes=90-500", 100, (90, 99)),  # clipped to the object
    ("bytes=-10", 100, (90, 99)),  # the last ten bytes
    ("bytes=-500", 100, (0, 99)),
    ("BYTES = 5 - 6", 100, (5, 6)),
    ("bytes=100-", 100, "unsatisfiable"),
    ("bytes=-0", 100, "unsatisfiable"),
    ("bytes=0-", 0, "unsatisfiable"),
    ("bytes=" + "9" * 40 + "-", 100, "unsatisfiable"),  # more digits than int() would take at 4300
    ("bytes=0-" + "9" * 40, 100, (0, 99)),
    ("bytes=20-10", 100, None),  # an invalid range is ignored: the whole object
    ("bytes=0-1,5-6", 100, None),  # several ranges: the whole object
    ("items=0-1", 100, None),
    ("bytes=-", 100, None),
    ("bytes=x-", 100, None),
])
def test_single_ranges(header, size, expected):
    assert parse_range(header, size) == expected


def test_if_none_match_uses_the_weak_comparison():
    assert etag_matches(f'"{SHA}"', SHA)
    assert etag_matches(f'W/"{SHA}"', SHA)
    assert etag_matches(f'"other", "{SHA}"', SHA)
    assert etag_matches("*", SHA)
    assert not etag_matches('"other"', SHA)
    assert not etag_matches(SHA, SHA)  # an ETag is quoted
