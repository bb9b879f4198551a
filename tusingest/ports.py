"""Protocols at the seams: session store, staging bytes and per-upload locks."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from tusingest.domain import Upload, UploadStatus


class SessionStore(Protocol):
    """Durable upload rows; every offset change is a compare-and-set."""

    async def insert(self, upload: Upload) -> None: ...

    async def get(self, upload_id: str) -> Upload | None: ...

    async def advance(
        self,
        upload_id: str,
        *,
        expected_offset: int,
        new_offset: int,
        length: int | None,
        status: UploadStatus,
        now: datetime,
        expires_at: datetime | None,
    ) -> Upload | None:
        """Set offset/length/status if the row is receiving at `expected_offset`; else None."""
        ...

    async def transition(
        self,
        upload_id: str,
        *,
        from_statuses: Sequence[UploadStatus],
        to_status: UploadStatus,
        now: datetime,
    ) -> bool:
        """Move the row to `to_status` if it is in one of `from_statuses`."""
        ...

    async def expired_ids(self, now: datetime, limit: int) -> list[str]:
        """Receiving uploads whose `expires_at` has passed."""
        ...

    async def ping(self) -> None: ...


class StagingWriter(Protocol):
    """Appends bytes at a fixed start offset of one staging file."""

    @property
    def written(self) -> int: ...

    async def write(self, data: bytes) -> None: ...

    async def sync(self) -> None:
        """Make everything written so far durable (fsync)."""
        ...

    async def discard(self) -> None:
        """Drop everything this writer wrote (truncate back to its start offset)."""
        ...

    async def close(self) -> None: ...


class Staging(Protocol):
    """Staging bytes of uploads in progress."""

    async def create(self, upload_id: str) -> None: ...

    async def writer(self, upload_id: str, offset: int) -> StagingWriter:
        """Open for appending at `offset`; bytes past it (uncommitted) are discarded first."""
        ...

    async def delete(self, upload_id: str) -> None: ...

    async def size(self, upload_id: str) -> int | None: ...


class Locker(Protocol):
    """Exclusive per-upload locks."""

    def hold(self, key: str, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the lock for `key`; raise `Locked` if it cannot be had within `timeout`."""
        ...
