"""One request body into staging: batched writes and hashing in worker threads, in parallel
with the receive loop; the request's own checksum verified at the end."""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import hashlib
import hmac
import threading
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


_DEPTH = 4  # full batches of one request in flight at once (written and hashed in order)


class _Batch:
    """A batch handed on: its buffer goes back to the pool once every lane is done with it."""

    __slots__ = ("buffer", "tasks")

    def __init__(self, buffer: bytearray, tasks: list[asyncio.Future[None]]) -> None:
        self.buffer = buffer
        self.tasks = tasks


class _Lane:
    """Runs blocking steps in order, one worker thread at a time. The thread keeps taking the
    next step while there is one, so a busy lane pays one hand-off, not one per step; a step
    that fails fails the steps queued behind it too."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[Callable[[], object], asyncio.Future[None]]] = (
            collections.deque()
        )
        self._running = False
        self._failure: BaseException | None = None

    def submit(self, step: Callable[[], object]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            self._queue.append((step, done))
            if self._running:
                return done
            self._running = True
        self._loop.run_in_executor(None, self._drain)
        return done

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                step, done = self._queue.popleft()
            if self._failure is None:
                try:
                    step()
                except BaseException as failure:  # handed to the awaiting coroutine
                    self._failure = failure
            self._loop.call_soon_threadsafe(_resolve, done, self._failure)


def _resolve(done: asyncio.Future[None], failure: BaseException | None) -> None:
    if done.cancelled():
        return
    if failure is None:
        done.set_result(None)
    else:
        done.set_exception(failure)


async def _outcomes(work: list[asyncio.Future[None]]) -> list[BaseException | None]:
    """Wait for `work` to end, each result or failure; a cancelled caller never cancels the
    work itself (a worker thread may still be using the batch's buffer)."""
    return await asyncio.gather(*(asyncio.shield(w) for w in work), return_exceptions=True)


async def _after(previous: asyncio.Future[None] | None, step: Callable[[], Awaitable[Any]]) -> None:
    """Run `step` once `previous` (the same lane's work on the batch before) has finished; if
    it failed, fail the same way without running."""
    if previous is not None:
        await previous
    await step()


class Receiver:
    """Streams one body into a writer. Bytes are copied into a batch buffer; each full batch
    goes to worker threads in lanes (hashlib and pwrite release the GIL): the first hasher
    (MD5, the slowest) has a lane of its own, the write and the other hashers share one. Each
    lane takes the batches in order, and up to _DEPTH batches are in flight while the next one
    fills, so receiving, writing and hashing overlap. A smaller batch (a small body, the end
    of a body, a batch in a crowd) waits for the lanes to drain and is written and hashed in
    one worker call: for small bodies the hand-offs cost more than the hashing. The body's
    last batch is fsynced in its write call (a batch that fills exactly to the declared
    Content-Length is known to be the last)."""

    def __init__(
        self,
        open_writer: Callable[[], Awaitable[StagingWriter]],
        pool: BufferPool,
        *,
        limit: int,
        expected: int | None = None,
        digest: UploadDigest | None,
        checksum: Checksum | None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self._open_writer = open_writer
        self._on_bytes = on_bytes
        self._pool = pool
        self._limit = limit
        # Where the body ends: its declared length (Content-Length), else the most it may
        # carry. A batch that fills up to it is the last: written and fsynced in one call.
        self._end = limit if expected is None else min(limit, expected)
        self._hashers: list[Any] = []
        if digest is not None:
            self._hashers += digest.hashers()
        self._checksum = checksum
        self._request_hash = CHECKSUM_ALGORITHMS[checksum.algorithm]() if checksum else None
        if self._request_hash is not None:
            self._hashers.append(self._request_hash)
        # Lane 0 writes and feeds the hashers after the first; the first has its own lane.
        self._with_write = [h.update for h in self._hashers[1:]]
        self._alone = self._hashers[:1]
        self._tails: list[asyncio.Future[None] | None] = [None] * (1 + len(self._alone))
        self._flight: collections.deque[_Batch] = collections.deque()
        self._lanes: list[_Lane] | None = None
        self.writer: StagingWriter | None = None
        self.received = 0
        self._filling: bytearray | None = None
        self._filled = 0
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
                        # Full; the body's last batch when it has reached its end.
                        await self._dispatch(last=not view and self.received >= self._end)
        except PayloadTooLarge:
            raise
        except BaseException:
            await asyncio.shield(self._dispatch())
            raise
        await self._dispatch(last=True)

    async def durable(self) -> None:
        """Everything received is written and fsynced."""
        writing, self._tails[0] = self._tails[0], None
        if writing is not None:
            await asyncio.shield(writing)
        if self.writer is not None and not self._synced:
            await self.writer.sync()

    async def hashed(self) -> None:
        """Every hash has seen everything received (and everything is written)."""
        tails = [t for t in self._tails if t is not None]
        self._tails = [None] * len(self._tails)
        for tail in tails:
            await asyncio.shield(tail)

    async def settle(self) -> None:
        """Wait for all work in flight, failed or not (a worker may still be reading a
        buffer); the buffers go back to the pool, then the first failure is raised."""
        self._tails = [None] * len(self._tails)
        failure: BaseException | None = None
        while self._flight:
            batch = self._flight[0]
            for outcome in await _outcomes(batch.tasks):
                if isinstance(outcome, BaseException) and failure is None:
                    failure = outcome
            self._flight.popleft()
            self._pool.give(batch.buffer)
        if failure is not None:
            raise failure

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

    async def _dispatch(self, *, last: bool = False) -> None:
        """Hand the filled batch on; `last`: the body has ended (nothing follows)."""
        if not self._filled or self._filling is None:
            return
        if self.writer is None:
            self.writer = await self._open_writer()
        if self._filled < BATCH_BYTES:
            await self.settle()
        while len(self._flight) >= _DEPTH:
            await self._retire()
        # No await from here on: a cancelled request still hands this batch on (`receive`).
        writer = self.writer
        buffer, self._filling = self._filling, None
        data = memoryview(buffer)[: self._filled]
        self._filled = 0
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        if len(data) < BATCH_BYTES:
            feed = [h.update for h in self._hashers]
            task = asyncio.ensure_future(self._write(writer, data, feed, last))
            self._tails[0] = task
            self._flight.append(_Batch(buffer, [task]))
            return
        tasks: list[asyncio.Future[None]] = [
            asyncio.ensure_future(
                _after(self._tails[0], lambda: self._write(writer, data, self._with_write, last))
            )
        ]
        if self._lanes is None:
            self._lanes = [_Lane(asyncio.get_running_loop()) for _ in self._alone]
        for lane, hasher in zip(self._lanes, self._alone, strict=True):
            tasks.append(lane.submit(functools.partial(hasher.update, data)))
        self._tails = [*tasks]
        self._flight.append(_Batch(buffer, tasks))

    async def _retire(self) -> None:
        """Wait for the oldest batch in flight and take its buffer back."""
        batch = self._flight[0]
        outcomes = await _outcomes(batch.tasks)
        self._flight.popleft()
        self._pool.give(batch.buffer)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

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
