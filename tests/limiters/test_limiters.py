"""Rate limiters: one contract suite for the in-process and Redis token buckets (real time,
small rates), then what each does on its own (eviction; Redis shared, expiring, failing open)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.rediskeys import redis_url
from tusingest.limiters.memory import MemoryRateLimiter
from tusingest.limiters.redis import RedisRateLimiter
from tusingest.ports import RateLimiter

ADAPTERS = ("memory", "redis")


@asynccontextmanager
async def limiter_of(kind: str, prefix: str) -> AsyncIterator[RateLimiter]:
    if kind == "memory":
        yield MemoryRateLimiter()
        return
    client = aioredis.from_url(redis_url())
    try:
        yield RedisRateLimiter(client, prefix=prefix)
    finally:
        await client.aclose()


def run(kind: str, prefix: str, body: Callable[[RateLimiter], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with limiter_of(kind, prefix) as limiter:
            return await body(limiter)

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ADAPTERS)
def test_allows_a_burst_then_says_how_long_to_wait(kind: str, prefix: str) -> None:
    async def body(limiter: RateLimiter) -> list[float]:
        # 1 token/s, burst 3: three at once, the fourth waits about a second.
        return [await limiter.take("alice", 1, 1.0, 3) for _ in range(4)]

    first, second, third, fourth = run(kind, prefix, body)
    assert (first, second, third) == (0, 0, 0)
    assert 0.9 < fourth <= 1.0


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_refusal_takes_nothing(kind: str, prefix: str) -> None:
    async def body(limiter: RateLimiter) -> list[float]:
        await limiter.take("alice", 2, 0.5, 2)
        # Asked again and again, the wait only shrinks: a refused take costs no tokens.
        return [await limiter.take("alice", 1, 0.5, 2) for _ in range(3)]

    waits = run(kind, prefix, body)
    assert all(1.8 < wait <= 2.0 for wait in waits), waits
    assert waits == sorted(waits, reverse=True)


@pytest.mark.parametrize("kind", ADAPTERS)
def test_the_bucket_refills_over_time(kind: str, prefix: str) -> None:
    async def body(limiter: RateLimiter) -> tuple[float, float, float]:
        # 20 tokens/s, burst 2: empty, then one token back after 50 ms.
        await limiter.take("alice", 2, 20.0, 2)
        refused = await limiter.take("alice", 1, 20.0, 2)
        await asyncio.sleep(refused + 0.02)
        again = await limiter.take("alice", 1, 20.0, 2)
        after = await limiter.take("alice", 1, 20.0, 2)
        return refused, again, after

    refused, again, after = run(kind, prefix, body)
    assert 0.04 < refused <= 0.05
    assert again == 0
    assert after > 0  # that token was the only one back


@pytest.mark.parametrize("kind", ADAPTERS)
def test_keys_are_separate_buckets(kind: str, prefix: str) -> None:
    async def body(limiter: RateLimiter) -> tuple[float, float]:
        await limiter.take("alice", 1, 0.1, 1)
        return await limiter.take("alice", 1, 0.1, 1), await limiter.take("bob", 1, 0.1, 1)

    alice, bob = run(kind, prefix, body)
    assert alice > 9
    assert bob == 0


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_cost_above_the_burst_is_capped_at_the_burst(kind: str, prefix: str) -> None:
    async def body(limiter: RateLimiter) -> tuple[float, float]:
        return await limiter.take("alice", 10, 1.0, 2), await limiter.take("alice", 1, 1.0, 2)

    whole, next_one = run(kind, prefix, body)
    assert whole == 0  # a chunk larger than the burst can be paid for once the bucket is full
    assert 0.9 < next_one <= 1.0


def test_memory_forgets_refilled_buckets_and_stays_bounded() -> None:
    now = [100.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0], max_buckets=3)

    async def body() -> list[int]:
        sizes = []
        for user in ("a", "b", "c", "d", "e"):
            await limiter.take(user, 1, 1.0, 5)
            sizes.append(len(limiter))
        now[0] += 1.5  # every bucket has refilled its one token
        await limiter.take("f", 1, 1.0, 5)
        sizes.append(len(limiter))
        return sizes

    assert asyncio.run(body()) == [1, 2, 3, 3, 3, 1]


def test_redis_buckets_are_shared_and_expire(prefix: str) -> None:
    async def body() -> tuple[float, float, int, bool]:
        one = aioredis.from_url(redis_url())
        two = aioredis.from_url(redis_url())
        try:
            node_a = RedisRateLimiter(one, prefix=prefix)
            node_b = RedisRateLimiter(two, prefix=prefix)
            first = await node_a.take("alice", 1, 2.0, 1)
            second = await node_b.take("alice", 1, 2.0, 1)
            ttl = await one.pttl(f"{prefix}ratelimit:alice")
            await asyncio.sleep(ttl / 1000 + 0.1)
            gone = not await one.exists(f"{prefix}ratelimit:alice")
            return first, second, ttl, gone
        finally:
            await one.aclose()
            await two.aclose()

    first, second, ttl, gone = asyncio.run(body())
    assert first == 0
    assert 0.4 < second <= 0.5  # node B sees the token node A took
    assert 0 < ttl <= 1500  # refilled (0.5 s) plus a second's margin
    assert gone


def test_redis_down_lets_requests_through_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> tuple[list[float], float]:
        # Nothing listens on port 1.
        client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        try:
            limiter = RedisRateLimiter(client)
            waits = [await limiter.take("alice", 1, 0.001, 1) for _ in range(5)]
            started = time.monotonic()
            await limiter.take("alice", 1, 0.001, 1)
            return waits, time.monotonic() - started
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="tusingest.limiters.redis"):
        waits, elapsed = asyncio.run(body())
    assert waits == [0, 0, 0, 0, 0]  # fail open: a 0.001/s bucket of 1 would refuse four
    assert elapsed < 0.1  # not asked again while it is known to be down
    # Only this limiter's lines: servers of other tests may log meanwhile.
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "tusingest.limiters.redis"
    ]
    assert len(warnings) == 1
    assert "rate limits are not enforced" in warnings[0].getMessage()
