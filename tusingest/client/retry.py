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
    server's own wish in seconds, when it said one; `paced` when the server is only asking us
    to slow down (429), which is no failure of the request."""

    def __init__(
        self, reason: str, retry_after: float | None = None, *, paced: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.paced = paced


class GaveUp(Exception):
    """Every attempt failed with a `Transient`; the message is the last reason."""


@dataclass(frozen=True)
class Backoff:
    attempts: int = 8
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    paced_seconds: float = 900.0  # waiting out 429s: no try is used up, up to this in all

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
        """`call()` until it does not raise `Transient`, at most `attempts` failed tries (a
        429 uses none, while the pauses it asks for stay within `paced_seconds` in all);
        `on_retry` hears of each failure that is tried again, and of the pause before it."""
        failed = 0
        paced = 0.0
        while True:
            try:
                return await call()
            except Transient as exc:
                pause = self.delay(failed, exc.retry_after)
                if exc.paced and paced + pause <= self.paced_seconds:
                    paced += pause
                else:
                    failed += 1
                    if failed >= self.attempts:
                        raise GaveUp(exc.reason) from exc
                if on_retry is not None:
                    on_retry(exc, pause)
                await asyncio.sleep(pause)
