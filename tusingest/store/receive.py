"""One request body into staging: batched writes and hashing in worker threads, in parallel
with the receive loop; the request's own checksum verified at the end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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

BATCH_BYTES = 512 << 10
_SYNC_EVERY_BYTES = 256 << 20  # bounds the work left for the final fsync of a long PATCH


SMALL_BATCH_BYTES = 64 << 10
# Full-size batch buffers out at once, all requests together: past it a request streams in
# small batches (more writes, the same bytes), so memory stays bounded however many uploads
# stream at once.
BATCH_BUDGET_BYTES = 32 << 20


class BufferPool:
    """Batch buffers reused across requests: no large allocation per batch, so memory stays
    flat (freed large blocks would otherwise linger in the heap) and pages stay warm. At most
    `budget` bytes of full-size buffers are out at once; beyond, `take` hands out small ones."""

    def __init__(self, keep: int = 8, budget: int = BATCH_BUDGET_BYTES) -> None:
        self._free: list[bytearray] = []
        self._small: list[bytearray] = []
        self._keep = keep
        self._max_out = max(1, budget // BATCH_BYTES)
        self.out = 0  # full-size buffers handed out and not given back

    def take(self, size: int) -> bytearray:
        """A buffer of `size` bytes (at most BATCH_BYTES; a small batch when the budget is
        spent); buffers below the small batch size are not pooled."""
        if size < SMALL_BATCH_BYTES:
            return bytearray(size)
        if size < BATCH_BYTES or self.out >= self._max_out:
            return self._small.pop() if self._small else bytearray(SMALL_BATCH_BYTES)
        self.out += 1
        return self._free.pop() if self._free else bytearray(BATCH_BYTES)

    def give(self, buffer: bytearray) -> None:
        if len(buffer) == BATCH_BYTES:
            self.out -= 1
            if len(self._free) < self._keep:
                self._free.append(buffer)
        elif len(buffer) == SMALL_BATCH_BYTES and len(self._small) < self._keep * 8:
            self._small.append(buffer)


class Receiver:
    """Streams one body into a writer. Bytes are copied into a batch buffer; each full batch
    is written and hashed in parallel worker threads (hashlib releases the GIL) while the next
    one fills. A smaller batch (a small body, the end of a body, a batch in a crowd) is written
    and hashed in one worker call: for small bodies the hand-offs between the loop and the
    threads cost more than the hashing. The body's last batch is fsynced in its write call."""

    def __init__(
        self,
        open_writer: Callable[[], Awaitable[StagingWriter]],
        pool: BufferPool,
        *,
        limit: int,
        digest: UploadDigest | None,
        checksum: Checksum | None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self._open_writer = open_writer
        self._on_bytes = on_bytes
        self._pool = pool
        self._limit = limit
        self._hashers: list[Any] = []
        if digest is not None:
            self._hashers += digest.hashers()
        self._checksum = checksum
        self._request_hash = CHECKSUM_ALGORITHMS[checksum.algorithm]() if checksum else None
        if self._request_hash is not None:
            self._hashers.append(self._request_hash)
        self.writer: StagingWriter | None = None
        self.received = 0
        self._filling: bytearray | None = None
        self._filled = 0
        self._in_flight: bytearray | None = None
        self._writing: asyncio.Future[None] | None = None
        self._hashing: asyncio.Future[Any] | None = None
        self._unsynced = 0
        self._synced = False  # the last write also made everything durable

    async def receive(self, body: AsyncIterator[bytes]) -> None:
        """Consume `body` and hand every byte to the writer and the hashes. On an exception
        from the body, what arrived is handed on too, then the exception propagates."""
        try:
            async for chunk in body:
                if self.received + len(chunk) > self._limit:
                    await self.settle()
                    raise PayloadTooLarge("the body goes past the upload length")
                self.received += len(chunk)
                view = memoryview(chunk)
                while view:
                    if self._filling is None:
                        # Never larger than what this request may still carry.
                        left = self._limit - (self.received - len(view))
                        self._filling = self._pool.take(min(BATCH_BYTES, left))
                    n = min(len(view), len(self._filling) - self._filled)
                    self._filling[self._filled : self._filled + n] = view[:n]
                    self._filled += n
                    view = view[n:]
                    if self._filled == len(self._filling):
                        # Full; the body's last batch when the request can carry no more.
                        await self._dispatch(last=not view and self.received == self._limit)
        except PayloadTooLarge:
            raise
        except BaseException:
            await asyncio.shield(self._dispatch())
            raise
        await self._dispatch(last=True)

    async def durable(self) -> None:
        """Everything received is written and fsynced."""
        await self._settle_writes()
        if self.writer is not None and not self._synced:
            await self.writer.sync()

    async def hashed(self) -> None:
        """Every hash has seen everything received."""
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            await hashing

    async def settle(self) -> None:
        """Wait for all work in flight; its buffer goes back to the pool."""
        await asyncio.gather(self._settle_writes(), self.hashed())
        if self._in_flight is not None:
            self._pool.give(self._in_flight)
            self._in_flight = None

    def release(self) -> None:
        """Return the buffer being filled (call once the receiver is done)."""
        if self._filling is not None:
            self._pool.give(self._filling)
            self._filling = None

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

    async def _dispatch(self, *, last: bool = False) -> None:
        """Hand the filled batch on; `last`: the body has ended (nothing follows)."""
        if not self._filled or self._filling is None:
            return
        # One batch in flight keeps memory bounded and the order intact.
        await self.settle()
        self._in_flight, self._filling = self._filling, None
        data = memoryview(self._in_flight)[: self._filled]
        self._filled = 0
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        if self.writer is None:
            self.writer = await self._open_writer()
        if len(data) < BATCH_BYTES:
            feed = [h.update for h in self._hashers]
            self._writing = asyncio.ensure_future(self._write(self.writer, data, feed, last))
            if feed:
                self._hashing = self._writing
            return
        self._writing = asyncio.ensure_future(self._write(self.writer, data, (), last))
        if self._hashers:
            self._hashing = asyncio.gather(
                *(asyncio.to_thread(h.update, data) for h in self._hashers)
            )

    async def _write(
        self,
        writer: StagingWriter,
        data: memoryview,
        feed: Sequence[Callable[[bytes | memoryview], object]],
        last: bool,
    ) -> None:
        await writer.write([data], feed=feed, sync=last)
        self._synced = last
        self._unsynced = 0 if last else self._unsynced + len(data)
        if self._unsynced >= _SYNC_EVERY_BYTES:
            self._unsynced = 0
            await writer.sync()
