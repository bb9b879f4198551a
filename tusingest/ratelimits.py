"""Per-user rate limits: uploads started per minute (refused with 429 and Retry-After) and bytes
per second (a body is paced, never refused); admins are exempt."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

from tusingest.domain import Principal
from tusingest.errors import RateLimited
from tusingest.ports import RateLimiter
from tusingest.settings.ratelimits import RateLimitSettings


def retry_after(wait: float) -> int:
    """Retry-After in whole seconds, never 0 (the bucket is still short until then)."""
    return max(1, math.ceil(wait))


class RateLimits:
    """What the HTTP surface asks before starting an upload and while it reads a body."""

    def __init__(self, limiter: RateLimiter, settings: RateLimitSettings) -> None:
        self._limiter = limiter
        self._uploads_rate = settings.uploads_per_minute / 60.0
        self._uploads_burst = settings.uploads_burst
        self._bytes_rate = settings.bytes_per_second
        self._bytes_burst = settings.bytes_burst

    async def start_upload(self, principal: Principal) -> None:
        """Count an upload `principal` starts, or refuse it: `RateLimited` (429, Retry-After)."""
        if self._uploads_rate <= 0 or principal.is_admin:
            return
        wait = await self._limiter.take(
            f"uploads:{principal.sub}", 1.0, self._uploads_rate, self._uploads_burst
        )
        if wait > 0:
            raise RateLimited(
                f"too many uploads started: at most {self._uploads_rate * 60:g} a minute "
                f"(bursts of {self._uploads_burst:g}); retry in {retry_after(wait)} s",
                retry_after=retry_after(wait),
            )

    def paced(self, principal: Principal, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`body`, each chunk passed on once the user's byte bucket pays for it: the client
        is slowed down to the rate (what arrived is kept, as with any slow client); memory
        holds one chunk, as aiohttp stops reading the socket while its buffer is full."""
        if self._bytes_rate <= 0 or principal.is_admin:
            return body
        return self._pace(f"bytes:{principal.sub}", body)

    async def _pace(self, key: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            await self._pay(key, len(chunk))
            yield chunk

    async def _pay(self, key: str, count: int) -> None:
        """Take `count` tokens, at most a burst at a time, sleeping while the bucket is short."""
        remaining = float(count)
        while remaining > 0:
            piece = min(remaining, self._bytes_burst)
            wait = await self._limiter.take(key, piece, self._bytes_rate, self._bytes_burst)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            remaining -= piece
