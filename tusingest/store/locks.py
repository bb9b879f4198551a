"""In-process per-upload leases with release requests (embedded / single node)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tusingest.errors import Locked
from tusingest.ports import ReleaseRequest


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    on_release: ReleaseRequest | None = None


def locked_error() -> Locked:
    return Locked("the upload is in use by another request", headers={"Retry-After": "1"})


class MemoryLocker:
    """Implements `Locker` with one asyncio.Lock per key, dropped when nobody holds or waits."""

    def __init__(self, wait_seconds: float) -> None:
        self._wait = wait_seconds
        self._entries: dict[str, _Entry] = {}

    async def busy(self, key: str) -> bool:
        return self.held_here(key)

    def held_here(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    def interrupt_all(self) -> None:
        for entry in list(self._entries.values()):
            if entry.on_release is not None:
                entry.on_release()

    @asynccontextmanager
    async def hold(
        self, key: str, *, on_release: ReleaseRequest | None = None, patient: bool = True
    ) -> AsyncIterator[None]:
        entry = self._entries.setdefault(key, _Entry())
        entry.users += 1
        try:
            if entry.lock.locked():
                if not patient:
                    raise locked_error()
                if entry.on_release is not None:
                    entry.on_release()
            try:
                async with asyncio.timeout(self._wait):
                    await entry.lock.acquire()
            except TimeoutError:
                raise locked_error() from None
            entry.on_release = on_release
            try:
                yield
            finally:
                entry.on_release = None
                entry.lock.release()
        finally:
            entry.users -= 1
            if not entry.users:
                del self._entries[key]
