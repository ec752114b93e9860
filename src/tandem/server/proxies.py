"""Who the client is, when reverse proxies stand in front of the server (TANDEM_TRUSTED_PROXIES).

The client's address decides its brute-force bucket (server/auth.py) and what the access log says.
A forwarding header (``X-Forwarded-For``, or ``Forwarded``'s ``for=``) is anyone's to write, so it is
believed only when the connection comes from a proxy named in the setting, and only the one header
those proxies set (TANDEM_FORWARDED_HEADER): the client may send the other. Each proxy appends the
address it got the request from, so the header is read from the right: the client is the rightmost
address that is not a trusted proxy; whatever lies left of it, the client wrote itself. By default
no proxy is trusted and the client is the connection's peer (``tandem serve`` turns uvicorn's own
proxy-header handling off, which trusts 127.0.0.1 by default).
"""

from __future__ import annotations

import ipaddress
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from tandem.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOPS = 32  # read no further left than this: a client can send a header of any length
_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("[^"]*"|[^;,\s]*)', re.IGNORECASE)


def networks(proxies: list[str]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)
    except ValueError as e:
        raise ConfigError(f"TANDEM_TRUSTED_PROXIES: {e}; give addresses or networks such as 10.0.0.1, "
                          "10.0.0.0/8 or ::1, separated by commas") from e


def _address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded's "[2001:db8::1]:4711"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "192.0.2.60:4711"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def hops(header: str, value: str) -> list[str]:
    """The addresses a forwarding header lists, left to right (as written: unchecked)."""
    if header == "forwarded":
        return [m.group(1) for element in value.split(",") for m in [_FOR.search(element.strip())] if m]
    return [part.strip() for part in value.split(",")]


def client_of(peer: str, listed: list[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy, then the rightmost address of
    ``listed`` that is not one (an unreadable entry ends the walk at the last trusted hop)."""
    here = _address(peer)
    if here is None or not any(here in n for n in trusted):
        return peer
    client = peer
    for text in reversed(listed[-MAX_HOPS:]):
        addr = _address(text)
        if addr is None:
            return client
        client = str(addr)
        if not any(addr in n for n in trusted):
            return client
    return client


class ClientAddress:
    """Sets ``scope["client"]`` to the client's address as the trusted proxies report it."""

    def __init__(self, app: ASGIApp, proxies: list[str], header: str = "x-forwarded-for") -> None:
        self.app = app
        self.trusted = networks(proxies)
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] == "http" and scope.get("client"):
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == self.header]
            if values:
                peer = scope["client"][0]
                client = client_of(peer, hops(self.header.decode(), ",".join(values)), self.trusted)
                if client != peer:
                    scope = {**scope, "client": (client, 0)}
        await self.app(scope, receive, send)
