"""When to try a request again: exponential backoff with jitter, or the server's Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Transient(Exception):
    """A failure worth another try: the network, a 5xx, 423 locked, 429; `retry_after` is the
    server's own wish in seconds, when it said one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every attempt failed with a `Transient`; the message is the last reason."""


@dataclass(frozen=True)
class Backoff:
    attempts: int = 8
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The pause before try `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_seconds)
        ceiling = min(self.base_seconds * 2**attempt, self.max_seconds)
        return random.uniform(ceiling / 2, ceiling)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        on_retry: Callable[[Transient, float], None] | None = None,
    ) -> T:
        """`call()` until it does not raise `Transient`, at most `attempts` times; `on_retry`
        hears of each failure that is tried again, and of the pause before it."""
        for attempt in range(self.attempts):
            try:
                return await call()
            except Transient as exc:
                if attempt + 1 == self.attempts:
                    raise GaveUp(exc.reason) from exc
                pause = self.delay(attempt, exc.retry_after)
                if on_retry is not None:
                    on_retry(exc, pause)
                await asyncio.sleep(pause)
        raise GaveUp("no attempt allowed")
