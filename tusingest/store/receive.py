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

_BATCH_BYTES = 4 << 20
_SYNC_EVERY_BYTES = 256 << 20  # bounds the work left for the final fsync of a long PATCH


class Receiver:
    """Streams one body into a writer; hashes go to threads (hashlib releases the GIL)."""

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
        self._inflight: asyncio.Future[None] | None = None
        self._unsynced = 0

    async def receive(self, body: AsyncIterator[bytes]) -> None:
        """Consume `body`; on an exception from it, flush what arrived and re-raise."""
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if self.received + len(chunk) > self._limit:
                    await self._settle()
                    raise PayloadTooLarge("the body goes past the upload length")
                self._pending.append(chunk)
                self._pending_bytes += len(chunk)
                self.received += len(chunk)
                if self._pending_bytes >= _BATCH_BYTES:
                    await self._dispatch()
        except PayloadTooLarge:
            raise
        except BaseException:
            await asyncio.shield(self.flush())
            raise
        await self.flush()

    async def flush(self) -> None:
        """Write and hash everything received so far."""
        await self._dispatch()
        await self._settle()

    def verify(self) -> None:
        """Raise 460 if the request's declared checksum does not match what arrived."""
        if self._checksum is None or self._request_hash is None:
            return
        if not hmac.compare_digest(self._request_hash.digest(), self._checksum.digest):
            actual = base64.b64encode(self._request_hash.digest()).decode()
            raise ChecksumMismatch(
                f"Upload-Checksum {self._checksum.algorithm} does not match the body ({actual})"
            )

    async def _settle(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _dispatch(self) -> None:
        if not self._pending:
            return
        await self._settle()  # one batch in flight at a time keeps memory bounded and ordered
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if self.writer is None:
            self.writer = await self._open_writer()
        self._inflight = asyncio.ensure_future(self._process(self.writer, batch))

    async def _process(self, writer: StagingWriter, batch: list[bytes]) -> None:
        jobs = [writer.write(batch)]
        jobs += [asyncio.to_thread(_update, h, batch) for h in self._hashers]
        await asyncio.gather(*jobs)
        self._unsynced += sum(len(b) for b in batch)
        if self._unsynced >= _SYNC_EVERY_BYTES:
            self._unsynced = 0
            await writer.sync()


def _update(hasher: Any, batch: list[bytes]) -> None:
    for buffer in batch:
        hasher.update(buffer)
