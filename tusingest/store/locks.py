"""Per-upload locks held for the length of a request (in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tusingest.errors import Locked


class MemoryLocker:
    """Implements `Locker` with one asyncio.Lock per key, dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, key: str, timeout: float) -> AsyncIterator[None]:  # noqa: ASYNC109
        # `timeout` bounds only the wait for the lock (Locker protocol), not the held section.
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            try:
                if timeout <= 0:
                    if lock.locked():
                        raise Locked("the upload is in use by another request")
                    await lock.acquire()
                else:
                    async with asyncio.timeout(timeout):
                        await lock.acquire()
            except TimeoutError:
                raise Locked(
                    "the upload is in use by another request", headers={"Retry-After": "1"}
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]
