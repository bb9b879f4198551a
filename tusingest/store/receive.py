"""One request body into staging: batched writes and hashing in worker threads, in parallel
with the receive loop; the request's own checksum verified at the end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tusingest.domain import Checksum
from tusingest.errors import ChecksumMismatch, PayloadTooLarge
from tusingest.ports import StagingWriter
from tusingest.store.digests import UploadDigest

CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "md5": lambda: hashlib.md5(usedforsecurity=False),
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "sha256": hashlib.sha256,
}

_BATCH_BYTES = 2 << 20
_SYNC_EVERY_BYTES = 256 << 20  # bounds the work left for the final fsync of a long PATCH


class Receiver:
    """Streams one body into a writer; writing and hashing run in worker threads (hashlib
    releases the GIL), each a batch behind the receive loop, so they overlap with it and, at
    the end, the last hashes overlap with the fsync."""

    def __init__(
        self,
        open_writer: Callable[[], Awaitable[StagingWriter]],
        *,
        limit: int,
        digest: UploadDigest | None,
        checksum: Checksum | None,
    ) -> None:
        self._open_writer = open_writer
        self._limit = limit
        self._hashers: list[Any] = []
        if digest is not None:
            self._hashers += [digest.md5, digest.sha256]
        self._checksum = checksum
        self._request_hash = CHECKSUM_ALGORITHMS[checksum.algorithm]() if checksum else None
        if self._request_hash is not None:
            self._hashers.append(self._request_hash)
        self.writer: StagingWriter | None = None
        self.received = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing: asyncio.Future[None] | None = None
        self._hashing: asyncio.Future[list[None]] | None = None
        self._unsynced = 0

    async def receive(self, body: AsyncIterator[bytes]) -> None:
        """Consume `body` and hand every byte to the writer and the hashes. On an exception
        from the body, what arrived is handed on too, then the exception propagates."""
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if self.received + len(chunk) > self._limit:
                    await self.settle()
                    raise PayloadTooLarge("the body goes past the upload length")
                self._pending.append(chunk)
                self._pending_bytes += len(chunk)
                self.received += len(chunk)
                if self._pending_bytes >= _BATCH_BYTES:
                    await self._dispatch()
        except PayloadTooLarge:
            raise
        except BaseException:
            await asyncio.shield(self._dispatch())
            raise
        await self._dispatch()

    async def durable(self) -> None:
        """Everything received is written and fsynced."""
        await self._settle_writes()
        if self.writer is not None:
            await self.writer.sync()

    async def hashed(self) -> None:
        """Every hash has seen everything received."""
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            await hashing

    async def settle(self) -> None:
        """Wait for all work in flight (before discarding it)."""
        await asyncio.gather(self._settle_writes(), self.hashed())

    def verify(self) -> None:
        """Raise 460 if the request's declared checksum does not match what arrived (call
        after `hashed`)."""
        if self._checksum is None or self._request_hash is None:
            return
        if not hmac.compare_digest(self._request_hash.digest(), self._checksum.digest):
            actual = base64.b64encode(self._request_hash.digest()).decode()
            raise ChecksumMismatch(
                f"Upload-Checksum {self._checksum.algorithm} does not match the body ({actual})"
            )

    async def _settle_writes(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _dispatch(self) -> None:
        if not self._pending:
            return
        # One batch in flight per stage keeps memory bounded and the order intact.
        await self.settle()
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        # One buffer per batch: each worker then makes one GIL-free C call for all of it,
        # instead of re-taking the GIL (held by the receive loop) between small chunks.
        batch = [pending[0] if len(pending) == 1 else b"".join(pending)]
        if self.writer is None:
            self.writer = await self._open_writer()
        self._writing = asyncio.ensure_future(self._write(self.writer, batch))
        if self._hashers:
            self._hashing = asyncio.gather(
                *(asyncio.to_thread(_update, h, batch) for h in self._hashers)
            )

    async def _write(self, writer: StagingWriter, batch: list[bytes]) -> None:
        await writer.write(batch)
        self._unsynced += sum(len(b) for b in batch)
        if self._unsynced >= _SYNC_EVERY_BYTES:
            self._unsynced = 0
            await writer.sync()


def _update(hasher: Any, batch: list[bytes]) -> None:
    for buffer in batch:
        hasher.update(buffer)
