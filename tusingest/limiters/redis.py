"""Token buckets in Redis, shared by every node: one atomic script per take, on the server's
clock; a Redis that cannot answer lets requests through (fail open) and says so, once a while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1] the bucket; ARGV cost, rate (tokens/s), burst. The hash holds the tokens and when they
# were counted (Redis TIME: every node agrees on it); it expires once the bucket is full again,
# which is the same as no bucket. Returns the wait as a string (Lua numbers become integers).
TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local cost = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at',
  string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""

WARN_EVERY_SECONDS = 60.0
DOWN_SECONDS = 5.0  # after a failure, requests pass without asking Redis for this long


class RedisRateLimiter:
    """Implements `RateLimiter` over Redis (keys `{prefix}ratelimit:{key}`)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}ratelimit:"
        self._script = client.register_script(TAKE)
        self._clock = clock
        self._down_until = float("-inf")
        self._warned_at = float("-inf")

    async def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        now = self._clock()
        if now < self._down_until:
            return 0.0
        cost = min(cost, burst)
        try:
            answer = await self._script(keys=[self._prefix + key], args=[cost, rate, burst])
        except (RedisError, OSError) as exc:
            self._down_until = now + DOWN_SECONDS
            if now - self._warned_at >= WARN_EVERY_SECONDS:
                self._warned_at = now
                log.warning(
                    "rate limits are not enforced: Redis does not answer (%s); uploads go on "
                    "unlimited until it does",
                    exc,
                )
            return 0.0
        return float(answer)
