"""A request body into a staging file (`Receiver`): full batches are written while their hashes
run in parallel; a smaller batch is written and hashed in one worker call; the body's last batch
is fsynced in its write call, and nothing is fsynced again. Written to a real file through
`FileStagingWriter`."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from tusingest.store.digests import UploadDigest
from tusingest.store.receive import BATCH_BYTES, SMALL_BATCH_BYTES, BufferPool, Receiver
from tusingest.store.staging import FileStagingWriter


class RecordingWriter:
    """Implements `StagingWriter` over a real `FileStagingWriter`, recording each call."""

    def __init__(self, path: Path) -> None:
        self._inner = FileStagingWriter(
            lambda: os.open(path, os.O_WRONLY | os.O_CREAT, 0o640), start=0
        )
        self.calls: list[tuple[str, int, int, bool]] = []  # (call, bytes, consumers, sync)

    @property
    def written(self) -> int:
        return self._inner.written

    async def write(
        self,
        buffers: Sequence[bytes | memoryview],
        *,
        feed: Sequence[Callable[[bytes | memoryview], object]] = (),
        sync: bool = False,
    ) -> None:
        self.calls.append(("write", sum(len(b) for b in buffers), len(feed), sync))
        await self._inner.write(buffers, feed=feed, sync=sync)

    async def sync(self) -> None:
        self.calls.append(("sync", 0, 0, False))
        await self._inner.sync()

    async def discard(self) -> None:
        await self._inner.discard()

    async def close(self) -> None:
        await self._inner.close()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _receive(path: Path, data: bytes) -> tuple[RecordingWriter, UploadDigest]:
    writer = RecordingWriter(path)
    digest = UploadDigest.new()

    async def scenario() -> None:
        async def open_writer() -> RecordingWriter:
            return writer

        receiver = Receiver(
            open_writer, BufferPool(), limit=len(data), digest=digest, checksum=None
        )
        await receiver.receive(_chunks(data, 64 << 10))
        await asyncio.gather(receiver.durable(), receiver.hashed())
        await receiver.settle()
        receiver.release()
        await writer.close()

    asyncio.run(scenario())
    return writer, digest


@pytest.mark.parametrize("size", [1, 1000, SMALL_BATCH_BYTES])
def test_a_small_body_is_written_hashed_and_synced_in_one_call(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    writer, digest = _receive(tmp_path / "staged", data)
    assert writer.calls == [("write", size, 2, True)]  # and no separate fsync
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests() == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_a_body_below_a_full_batch_goes_in_small_batches_hashed_as_written(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    writer, digest = _receive(tmp_path / "staged", data)
    assert writer.calls == [("write", SMALL_BATCH_BYTES, 2, False), ("write", 34_464, 2, True)]
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests() == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_a_large_body_hashes_full_batches_apart_and_ends_with_its_tail(tmp_path: Path) -> None:
    data = os.urandom(2 * BATCH_BYTES + 12_345)
    writer, digest = _receive(tmp_path / "staged", data)
    assert writer.calls == [
        ("write", BATCH_BYTES, 0, False),
        ("write", BATCH_BYTES, 0, False),
        ("write", 12_345, 2, True),
    ]
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests() == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_a_body_of_whole_batches_is_synced_with_its_last_write(tmp_path: Path) -> None:
    data = os.urandom(2 * BATCH_BYTES)
    writer, digest = _receive(tmp_path / "staged", data)
    assert writer.calls == [("write", BATCH_BYTES, 0, False), ("write", BATCH_BYTES, 0, True)]
    assert digest.hexdigests()[1] == hashlib.sha256(data).hexdigest()
