"""Token buckets in process memory (one node, or no Redis): bounded, idle buckets evicted."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    at: float  # when `tokens` was counted
    full_at: float  # from then on the bucket is as good as new: it can go


class MemoryRateLimiter:
    """Implements `RateLimiter`. A bucket that has refilled is forgotten (a new one starts
    full, the same thing), so memory follows the users active within a refill time; past
    `max_buckets` the least recently used go first."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS
    ) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        now = self._clock()
        self._evict(now)
        cost = min(cost, burst)
        bucket = self._buckets.pop(key, None)
        tokens = burst if bucket is None else min(burst, bucket.tokens + (now - bucket.at) * rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / rate
        self._buckets[key] = _Bucket(tokens, now, now + (burst - tokens) / rate)
        return wait

    def _evict(self, now: float) -> None:
        """Drop refilled buckets from the least recently used end, and any beyond the cap."""
        buckets = self._buckets
        while buckets:
            key, oldest = next(iter(buckets.items()))
            if oldest.full_at > now and len(buckets) < self._max:
                return
            del buckets[key]
