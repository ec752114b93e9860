"""Authentication (API keys and registered devices' credentials) and scope checks for every route
but health.

Two kinds of caller present a bearer token: an API key (``tdm_…``, scope predict, device, train or admin)
and a registered device (``tdd_…``, from ``POST /v1/devices``; scope device, speaking only as its
own device id). The OTA routes (``device_route``) take a registered device or an admin key: the
fleet's device-scope API key only enrols devices there (unless TANDEM_OTA_SHARED_KEY_UPDATES lets
apps from before registration on), and a device credential is good for the OTA routes only.

Tokens are checked by the registry (stored hashed, compared in constant time there). A worker
remembers each answer for ``key_cache_s`` so that a busy route does not query the database per
request; the cache is keyed by the key's sha256, so plaintext keys are never kept, and a revoked key
stops working within ``key_cache_s``. An expiring key stops at its expiry to the second, cache or not:
its expiry is in the record, checked against the clock on every request. It is then refused as a
revoked key is (401, ``error="invalid_token"``), with a message and a metric reason of its own
(``expired_token``).

Brute force: every failed check is counted (tandem_auth_failures_total), and those that presented
a key take a token from their client address's bucket (TANDEM_AUTH_FAILURES_*). An address whose
bucket is empty gets 429 before its key is even looked at: guesses, and the registry lookups
they cause, then come no faster than the refill rate per address, whatever the guesser sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tandem.errors import Forbidden, RateLimited, Unauthenticated, whole_seconds
from tandem.registry.records import KeyInfo, Scope, grants
from tandem.security.apikeys import is_device_token
from tandem.server.ratelimit import Limiter

MAX_KEY_CHARS = 512
CACHE_ENTRIES = 10_000
REALM = 'Bearer realm="tandem"'


def unauthenticated(message: str, reason: str | None = None, counted: str | None = None,
                    description: str | None = None) -> Unauthenticated:
    """401 with RFC 6750's challenge: ``reason`` its error code, ``description`` its error_description;
    ``counted``: the reason tandem_auth_failures_total counts it under, when finer than the error code."""
    e = Unauthenticated(message)
    challenge = REALM if reason is None else f'{REALM}, error="{reason}"'
    if description is not None:
        challenge += f', error_description="{description}"'
    e.challenge = challenge  # type: ignore[attr-defined]
    e.reason = counted or reason or "missing_key"  # type: ignore[attr-defined]
    return e


def forbidden(message: str, need: Scope) -> Forbidden:
    e = Forbidden(message)
    e.challenge = f'{REALM}, error="insufficient_scope", scope="{need}"'  # type: ignore[attr-defined]
    return e


def bearer_token(header: str | None) -> str:
    if not header:
        raise unauthenticated("this route needs an API key: send 'Authorization: Bearer <key>' "
                              "(create one with `tandem keys create --scope predict`)")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated("the Authorization header must be 'Bearer <api key>'", "invalid_request")
    if len(token) > MAX_KEY_CHARS or not token.isascii():
        raise unauthenticated("unknown or revoked API key", "invalid_token")
    return token


class FailureGuard:
    """Failed key checks per client address: a token bucket of ``burst`` failures refilled at
    ``rate`` per second (in Redis, shared by every worker, when the limiter is Redis's)."""

    PREFIX = "auth-failures:"

    def __init__(self, limiter: Limiter, rate: float, burst: int, counted: Callable[[str], None]) -> None:
        self._limiter = limiter
        self._rate, self._burst = rate, burst
        self._counted = counted
        self._blocked: dict[str, float] = {}  # address -> monotonic time until which it gets 429

    def check(self, client: str) -> None:
        until = self._blocked.get(client)
        if until is None:
            return
        wait = until - time.monotonic()
        if wait <= 0:
            del self._blocked[client]
            return
        self._counted("blocked")
        raise self._refusal(wait)

    async def failed(self, client: str, reason: str, presented: bool) -> None:
        """Count a failed check; RateLimited when it was one guess too many from ``client``."""
        self._counted(reason)
        if not presented:  # no key at all is a misconfigured client, not a guess
            return
        wait = await self._limiter.take(self.PREFIX + client, self._rate, self._burst)
        if wait > 0:
            if len(self._blocked) >= CACHE_ENTRIES:  # spoofed addresses must not grow memory without bound
                self._blocked.clear()
            self._blocked[client] = time.monotonic() + wait
            raise self._refusal(wait)

    @staticmethod
    def _refusal(wait: float) -> RateLimited:
        return RateLimited(f"too many failed API-key checks from this address; retry in {whole_seconds(wait)} s", wait)


class Authenticator:
    def __init__(self, verify: Callable[[str], KeyInfo | None], cache_s: float, guard: FailureGuard | None = None,
                 verify_device: Callable[[str], KeyInfo | None] | None = None,
                 shared_key_updates: bool = False) -> None:
        self._verify = verify
        self._verify_device = verify_device or (lambda _token: None)
        self._cache_s = cache_s
        self._cache: dict[bytes, tuple[KeyInfo | None, float]] = {}
        self._guard = guard
        self._shared_key_updates = shared_key_updates

    async def authenticate(self, header: str | None, need: Scope, client: str = "",
                           device_route: bool = False) -> KeyInfo:
        """The caller's record if it may call a route that needs ``need`` (``device_route``: an OTA
        route, for registered devices); 401 or 403 otherwise (429 while ``client``, the caller's
        address, has failed too often)."""
        if self._guard is None:
            return await self._authenticate(header, need, device_route)
        self._guard.check(client)
        try:
            return await self._authenticate(header, need, device_route)
        except Unauthenticated as e:
            await self._guard.failed(client, getattr(e, "reason", "invalid_token"), presented=bool(header))
            raise
        except Forbidden:
            await self._guard.failed(client, "insufficient_scope", presented=False)
            raise

    async def _authenticate(self, header: str | None, need: Scope, device_route: bool) -> KeyInfo:
        token = bearer_token(header)
        info = await self._lookup(token)
        if info is None or info.revoked is not None:
            what = "device credential" if is_device_token(token) else "API key"
            raise unauthenticated(f"unknown or revoked {what}", "invalid_token")
        if info.expired(datetime.now(UTC)):
            raise unauthenticated(f"API key {info.key_id} expired at {info.expires:%Y-%m-%d %H:%M:%S} UTC; create a "
                                  "new one with `tandem keys create`", "invalid_token", "expired_token",
                                  "the API key expired")
        if not grants(info.scope, need):
            raise forbidden(f"this route needs a key with scope '{need}' (or admin); "
                            f"key {info.key_id} has scope '{info.scope}'", need)
        if info.device_id is not None and not device_route:
            raise forbidden(f"this route needs a key with scope '{need}' (or admin); a registered device's credential "
                            f"(device {info.device_id}) is good for the OTA routes /v1/ota/* only", need)
        if device_route and info.device_id is None and info.scope == "device" and not self._shared_key_updates:
            raise forbidden(f"this route needs a registered device's credential (or an admin key); key {info.key_id} "
                            "is the fleet's shared device key, which only registers devices: POST /v1/devices with "
                            "it once, keep the credential it returns, and send 'Authorization: Bearer <credential>' "
                            "(docs/ota.md)", need)
        return info

    async def _lookup(self, token: str) -> KeyInfo | None:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        verify = self._verify_device if is_device_token(token) else self._verify
        info = await asyncio.to_thread(verify, token)
        if self._cache_s > 0:
            if len(self._cache) >= CACHE_ENTRIES:  # unknown keys must not grow memory without bound
                self._cache.clear()
            self._cache[digest] = (info, now + self._cache_s)
        return info
