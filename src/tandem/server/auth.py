"""API-key authentication and scope checks for every route but health.

Keys are checked by the registry (stored hashed, compared in constant time there). A worker
remembers each answer for ``key_cache_s`` so that a busy route does not query the database per
request; the cache is keyed by the key's sha256, so plaintext keys are never kept, and a revoked key
stops working within ``key_cache_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from tandem.errors import Forbidden, Unauthenticated
from tandem.registry.records import KeyInfo, Scope, grants

MAX_KEY_CHARS = 512
CACHE_ENTRIES = 10_000
REALM = 'Bearer realm="tandem"'


def unauthenticated(message: str, reason: str | None = None) -> Unauthenticated:
    e = Unauthenticated(message)
    e.challenge = REALM if reason is None else f'{REALM}, error="{reason}"'  # type: ignore[attr-defined]
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


class Authenticator:
    def __init__(self, verify: Callable[[str], KeyInfo | None], cache_s: float) -> None:
        self._verify = verify
        self._cache_s = cache_s
        self._cache: dict[bytes, tuple[KeyInfo | None, float]] = {}

    async def authenticate(self, header: str | None, need: Scope) -> KeyInfo:
        """The key's record if it may call a route that needs ``need``; 401 or 403 otherwise."""
        token = bearer_token(header)
        info = await self._lookup(token)
        if info is None or info.revoked is not None:
            raise unauthenticated("unknown or revoked API key", "invalid_token")
        if not grants(info.scope, need):
            raise forbidden(f"this route needs a key with scope '{need}' (or admin); "
                            f"key {info.key_id} has scope '{info.scope}'", need)
        return info

    async def _lookup(self, token: str) -> KeyInfo | None:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        info = await asyncio.to_thread(self._verify, token)
        if self._cache_s > 0:
            if len(self._cache) >= CACHE_ENTRIES:  # unknown keys must not grow memory without bound
                self._cache.clear()
            self._cache[digest] = (info, now + self._cache_s)
        return info
