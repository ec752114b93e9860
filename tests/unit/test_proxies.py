"""Who the client is behind reverse proxies (server/proxies.py): forwarding headers believed only from
trusted proxies, read from the right."""

from __future__ import annotations

import pytest

from tandem.errors import ConfigError
from tandem.server.proxies import client_of, hops, networks

PROXY = networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(("peer", "header", "client"), [
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not from a proxy: the header is the client's own word
    ("10.0.0.2", "1.2.3.4", "1.2.3.4"),
    ("10.0.0.2", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # what the client wrote (left) is not believed
    ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),  # a chain of trusted proxies is skipped
    ("10.0.0.2", "10.0.0.5, 10.0.0.7", "10.0.0.5"),  # all proxies: the leftmost
    ("10.0.0.2", "garbage, 10.0.0.7", "10.0.0.7"),  # unreadable: the walk ends at the last trusted hop
    ("10.0.0.2", "1.2.3.4:5678", "1.2.3.4"),
    ("::1", "2001:db8::1", "2001:db8::1"),
])
def test_x_forwarded_for_is_read_from_the_right(peer, header, client):
    assert client_of(peer, hops("x-forwarded-for", header), PROXY) == client


def test_forwarded_for_parameters_are_read():
    value = 'for=6.6.6.6;proto=http, for="[2001:db8:cafe::17]:4711";by=10.0.0.1, for=10.0.0.3'
    assert hops("forwarded", value) == ["6.6.6.6", '"[2001:db8:cafe::17]:4711"', "10.0.0.3"]
    assert client_of("10.0.0.2", hops("forwarded", value), PROXY) == "2001:db8:cafe::17"


def test_no_trusted_proxy_means_the_peer():
    assert client_of("127.0.0.1", ["1.2.3.4"], ()) == "127.0.0.1"


def test_a_bad_setting_fails_at_start():
    with pytest.raises(ConfigError, match="TANDEM_TRUSTED_PROXIES"):
        networks(["10.0.0.0/8", "not-an-address"])
