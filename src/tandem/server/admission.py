"""Requests in flight per server worker (TANDEM_MAX_IN_FLIGHT, and TANDEM_MAX_IN_FLIGHT_PER_CLIENT of them
from one client address): past the limit, a request is answered 503 with ``Retry-After`` at once, before its body is read or anything is looked up, so that a flood
queues nowhere and costs the server next to nothing (STYLE 18).

A request counts from the moment its headers arrived until the last byte of its answer left (a
download holds its slot while it streams). Health checks (``/v2/health/*``) are not counted: a load
balancer must still see a busy server alive. Connections that have not sent complete headers are not
requests yet; server/connections.py bounds those.

Device traffic (``/v1/ota/...`` and ``/v1/devices``: update checks, downloads, reports, enrolments) has
a share of its own (TANDEM_MAX_IN_FLIGHT_OTA, default a quarter) and the other requests the rest: a
fleet downloading an update at once (each download holds its slot while it streams) cannot take the
slots inference needs, nor a flood of inference the fleet's. A bulkhead rather than borrowing: a slot
lent to a long download could not be taken back when inference needs it.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

HEALTH = "/v2/health/"
DEVICE_TRAFFIC = ("/v1/ota/", "/v1/devices")
RETRY_AFTER_S = 1


def ota_share(limit: int, ota: int = 0) -> int:
    """The slots of device traffic out of ``limit`` (TANDEM_MAX_IN_FLIGHT_OTA ``ota``, 0: a quarter); 0 when
    ``limit`` is too small to split (1: both kinds share it)."""
    if limit < 2:
        return 0
    return min(ota or max(1, limit // 4), limit - 1)


def _refusal(message: str) -> tuple[dict, dict]:
    body = orjson.dumps({"error": message})
    start = {"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()), (b"x-content-type-options", b"nosniff")]}
    return start, {"type": "http.response.body", "body": body}


class InFlightLimit:
    """At most ``limit`` requests in flight, ``ota`` of them device traffic and ``limit - ota`` the others,
    and at most ``per_client`` of them from one client address (as server/proxies.py found it): one
    client's slow requests (a body sent a byte at a time) fill its own share, not everyone's."""

    def __init__(self, app: ASGIApp, limit: int, per_client: int = 0, refused: object = None, ota: int = 0) -> None:
        """``per_client`` 0: half of ``limit``; ``ota`` 0: a quarter (see ota_share); ``refused``: called for
        each request turned away (a metric)."""
        self.app = app
        self.limit = limit
        self.per_client = per_client or max(1, limit // 2)
        self.ota_limit = ota_share(limit, ota)
        self.other_limit = limit - self.ota_limit
        self.in_flight = 0
        self.ota_in_flight = 0
        self.by_client: dict[str, int] = {}
        self._refused = refused if callable(refused) else (lambda: None)
        if self.ota_limit:
            self._full = _refusal(f"the server is handling as many requests as it may ({self.other_limit} of "
                                  f"TANDEM_MAX_IN_FLIGHT={limit}; the other {self.ota_limit} are device traffic's, "
                                  f"TANDEM_MAX_IN_FLIGHT_OTA); retry in {RETRY_AFTER_S} s")
            self._ota_full = _refusal(f"the server is handling as many device requests (OTA) as it may "
                                      f"({self.ota_limit}, TANDEM_MAX_IN_FLIGHT_OTA); retry in {RETRY_AFTER_S} s")
        else:
            self._full = self._ota_full = _refusal(f"the server is handling as many requests as it may ({limit}, "
                                                   f"TANDEM_MAX_IN_FLIGHT); retry in {RETRY_AFTER_S} s")
        self._share = _refusal(f"this client has as many requests in flight as one client may ({self.per_client}, "
                               f"TANDEM_MAX_IN_FLIGHT_PER_CLIENT); retry in {RETRY_AFTER_S} s")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(HEALTH):
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else ""
        mine = self.by_client.get(client, 0)
        device = bool(self.ota_limit) and scope["path"].startswith(DEVICE_TRAFFIC)
        if device:
            refusal = self._ota_full if self.ota_in_flight >= self.ota_limit else None
        else:
            others = self.in_flight - self.ota_in_flight
            refusal = self._full if others >= self.other_limit or self.in_flight >= self.limit else None
        if refusal is None and mine >= self.per_client:
            refusal = self._share
        if refusal is not None:
            self._refused()
            await send(refusal[0])
            await send(refusal[1])
            return
        self.in_flight += 1
        self.ota_in_flight += device
        self.by_client[client] = mine + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.ota_in_flight -= device
            left = self.by_client[client] - 1
            if left:
                self.by_client[client] = left
            else:
                del self.by_client[client]
