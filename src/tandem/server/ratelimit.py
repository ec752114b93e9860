"""Per-key request rate limits: token buckets, in this process or shared through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes one or
gets 429 with the seconds until the next token. With TANDEM_REDIS_URL set, every worker and
server shares one bucket per key: an atomic Lua script refills and takes in one round trip, on
Redis's clock (servers' clocks may differ). If Redis cannot be reached the request is let through
and counted (tandem_rate_limit_backend_errors_total): a limiter outage must not become an outage
of inference.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from tandem.errors import RateLimited, whole_seconds

log = logging.getLogger(__name__)


class Limiter(Protocol):
    async def take(self, key: str, rate: float | None = None, burst: int | None = None) -> float:
        """0 if the request may go ahead, else the seconds until it may (``rate``/``burst``: this
        key's bucket, when it differs from the limiter's default)."""
        ...

    async def close(self) -> None: ...


def refill(tokens: float, elapsed: float, rate: float, burst: int) -> float:
    return min(float(burst), tokens + max(0.0, elapsed) * rate)


class LocalLimiter:
    """Buckets in this process's memory (one worker, or limits per worker)."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, key: str, rate: float | None = None, burst: int | None = None) -> float:
        rate, burst = rate or self.rate, burst or self.burst
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = refill(tokens, now - last, rate, burst)
        if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
            self._buckets.clear()  # only keys that passed authentication get here; this is a backstop
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    async def close(self) -> None:
        return None


# KEYS[1]: the bucket; ARGV: rate per second, burst. Returns {allowed, seconds to wait as a string}
# (Redis truncates Lua numbers to integers in replies).
TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisLimiter:
    """One bucket per key in Redis, shared by every worker and server that uses the same Redis."""

    PREFIX = "tandem:ratelimit:"

    def __init__(self, url: str, rate: float, burst: int, on_error: object = None) -> None:
        import redis.asyncio as aioredis

        self.rate, self.burst = rate, burst
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(TOKEN_BUCKET)
        self._on_error = on_error
        # While Redis is unreachable, limits hold per worker (each worker's buckets, as without
        # Redis) rather than not at all; said once when it goes, once when it is back.
        self._fallback = LocalLimiter(rate, burst)
        self._down = False

    async def take(self, key: str, rate: float | None = None, burst: int | None = None) -> float:
        from redis.exceptions import RedisError

        try:
            allowed, wait = await self._script(keys=[self.PREFIX + key], args=[rate or self.rate, burst or self.burst])
        except (RedisError, OSError) as e:
            if not self._down:
                self._down = True
                log.warning("Redis is unreachable (%s): rate limits hold per worker until it is back", e)
            if callable(self._on_error):
                self._on_error()
            return await self._fallback.take(key, rate, burst)
        if self._down:
            self._down = False
            log.warning("Redis is back: rate limits are shared again")
        return 0.0 if int(allowed) == 1 else float(wait)

    async def close(self) -> None:
        await self._redis.aclose()


async def check(limiter: Limiter, key_id: str, rate: float | None = None, burst: int | None = None) -> None:
    wait = await limiter.take(key_id, rate, burst)
    if wait > 0:
        raise RateLimited(f"rate limit for key {key_id} reached; retry in {whole_seconds(wait)} s", retry_after=wait)
