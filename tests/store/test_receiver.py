"""A request body into a staging file (`Receiver`): full batches are written (SHA-256 fed in the
same worker call) while MD5 runs in a lane of its own, several batches in flight; a smaller batch
is written and hashed in one worker call; the body's last batch is fsynced in its write call, and
nothing is fsynced again. Written to a real file through `FileStagingWriter`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from tusingest.store.digests import UploadDigest
from tusingest.store.receive import _DEPTH, BATCH_BYTES, SMALL_BATCH_BYTES, BufferPool, Receiver
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
        await self.before_write()
        self.calls.append(("write", sum(len(b) for b in buffers), len(feed), sync))
        await self._inner.write(buffers, feed=feed, sync=sync)

    async def before_write(self) -> None:
        """A test writer's hook (slow or failing writes)."""

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


def _receiver(
    writer: RecordingWriter,
    pool: BufferPool,
    data: bytes,
    digest: UploadDigest,
    *,
    limit: int | None = None,
    expected: int | None = None,
) -> Receiver:
    async def open_writer() -> RecordingWriter:
        return writer

    return Receiver(
        open_writer,
        pool,
        limit=len(data) if limit is None else limit,
        expected=expected,
        digest=digest,
        checksum=None,
    )


async def _finish(receiver: Receiver, writer: RecordingWriter) -> None:
    """What a committing request does: durable and hashed, then every buffer back."""
    await asyncio.gather(receiver.durable(), receiver.hashed())
    await receiver.settle()
    receiver.release()
    await writer.close()


def _receive(
    path: Path, data: bytes, *, limit: int | None = None, expected: int | None = None
) -> tuple[RecordingWriter, UploadDigest]:
    writer = RecordingWriter(path)
    digest = UploadDigest.new()

    async def scenario() -> None:
        receiver = _receiver(writer, BufferPool(), data, digest, limit=limit, expected=expected)
        await receiver.receive(_chunks(data, 64 << 10))
        await _finish(receiver, writer)

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
        ("write", BATCH_BYTES, 1, False),
        ("write", BATCH_BYTES, 1, False),
        ("write", 12_345, 2, True),
    ]
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests() == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_a_body_of_whole_batches_is_synced_with_its_last_write(tmp_path: Path) -> None:
    data = os.urandom(2 * BATCH_BYTES)
    writer, digest = _receive(tmp_path / "staged", data)
    assert writer.calls == [("write", BATCH_BYTES, 1, False), ("write", BATCH_BYTES, 1, True)]
    assert digest.hexdigests()[1] == hashlib.sha256(data).hexdigest()


def test_a_patch_of_whole_batches_in_a_longer_upload_is_synced_with_its_last_write(
    tmp_path: Path,
) -> None:
    """A PATCH of 1 MiB into a larger upload: its Content-Length marks the last batch, so the
    fsync goes with that write instead of a worker call of its own."""
    data = os.urandom(2 * BATCH_BYTES)
    writer, digest = _receive(tmp_path / "staged", data, limit=100 << 20, expected=len(data))
    assert writer.calls == [("write", BATCH_BYTES, 1, False), ("write", BATCH_BYTES, 1, True)]
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests()[1] == hashlib.sha256(data).hexdigest()


def test_a_body_of_unknown_length_is_synced_once_it_has_ended(tmp_path: Path) -> None:
    """Without a Content-Length (chunked), a full batch may be followed by more: the body's
    end is known only once it arrives, and then one fsync covers what was written."""
    data = os.urandom(2 * BATCH_BYTES)
    writer, digest = _receive(tmp_path / "staged", data, limit=100 << 20)
    assert writer.calls == [
        ("write", BATCH_BYTES, 1, False),
        ("write", BATCH_BYTES, 1, False),
        ("sync", 0, 0, False),
    ]
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests()[1] == hashlib.sha256(data).hexdigest()


class SlowWriter(RecordingWriter):
    """A writer whose writes take a while (and optionally fail at one call), noting how many
    full-size batch buffers were out of the pool at each write."""

    def __init__(self, path: Path, pool: BufferPool, fail_at: int | None = None) -> None:
        super().__init__(path)
        self.pool = pool
        self.fail_at = fail_at
        self.out_seen: list[int] = []
        self.second_write = asyncio.Event()

    async def before_write(self) -> None:
        self.out_seen.append(self.pool.out)
        if len(self.out_seen) == 2:
            self.second_write.set()
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            self.calls.append(("failed", 0, 0, False))
            raise OSError(28, "No space left on device")
        await asyncio.sleep(0.005)


def test_batches_overlap_up_to_the_depth_and_come_back_to_the_pool(tmp_path: Path) -> None:
    data = os.urandom(12 * BATCH_BYTES)
    pool = BufferPool()
    writer = SlowWriter(tmp_path / "staged", pool)
    digest = UploadDigest.new()

    async def scenario() -> None:
        receiver = _receiver(writer, pool, data, digest)
        await receiver.receive(_chunks(data, 64 << 10))
        await _finish(receiver, writer)

    asyncio.run(scenario())
    # While one batch is written, the next ones are already handed on (and the next fills).
    assert max(writer.out_seen) >= 3
    assert max(writer.out_seen) <= _DEPTH + 1
    assert pool.out == 0
    assert (tmp_path / "staged").read_bytes() == data
    assert digest.hexdigests() == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_a_failing_write_stops_the_body_and_every_buffer_comes_back(tmp_path: Path) -> None:
    data = os.urandom(10 * BATCH_BYTES)
    pool = BufferPool()
    writer = SlowWriter(tmp_path / "staged", pool, fail_at=2)

    async def scenario() -> None:
        receiver = _receiver(writer, pool, data, UploadDigest.new())
        with pytest.raises(OSError, match="No space left"):
            await receiver.receive(_chunks(data, 64 << 10))
        with pytest.raises(OSError, match="No space left"):
            await receiver.settle()
        await receiver.settle()  # nothing left in flight: settles at once
        receiver.release()
        await writer.close()

    asyncio.run(scenario())
    assert pool.out == 0
    # Nothing is written after the failed write: the batches behind it fail with it.
    assert [call[0] for call in writer.calls] == ["write", "write", "failed"]
    assert (tmp_path / "staged").stat().st_size == 2 * BATCH_BYTES


def test_a_cancelled_request_waits_for_the_workers_before_reusing_buffers(tmp_path: Path) -> None:
    data = os.urandom(8 * BATCH_BYTES)
    pool = BufferPool()
    writer = SlowWriter(tmp_path / "staged", pool)
    digest = UploadDigest.new()

    async def scenario() -> None:
        receiver = _receiver(writer, pool, data, digest)
        receiving = asyncio.ensure_future(receiver.receive(_chunks(data, 64 << 10)))
        await writer.second_write.wait()
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        # What arrived is handed on, in order, and every hash saw exactly the bytes written.
        await _finish(receiver, writer)
        written = (tmp_path / "staged").read_bytes()
        assert receiver.received == len(written)
        assert data.startswith(written)
        assert digest.hexdigests() == (
            hashlib.md5(written).hexdigest(),
            hashlib.sha256(written).hexdigest(),
        )

    asyncio.run(scenario())
    assert pool.out == 0


def _open_here(path: Path) -> bool:
    """Whether this process holds a descriptor of `path`."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone already
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
    return False


def test_the_last_write_closes_the_file_and_a_discard_after_it_still_cuts_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "staged"
    path.write_bytes(b"committed")
    opened: list[int] = []

    def open_file() -> int:
        fd = os.open(path, os.O_WRONLY)
        opened.append(fd)
        if os.fstat(fd).st_size > 9:  # as FileStaging does: cut back to the committed offset
            os.ftruncate(fd, 9)
        return fd

    writer = FileStagingWriter(open_file, start=9)

    async def scenario() -> None:
        await writer.write([b"abc"])
        assert _open_here(path)
        await writer.write([b"def"], sync=True)
        # Closed by the last write itself, before close() is called.
        assert not _open_here(path)
        assert path.read_bytes() == b"committedabcdef"
        with pytest.raises(RuntimeError, match="nothing after its last"):
            await writer.write([b"more"])
        await writer.discard()  # the request's checksum did not match, say
        await writer.close()

    asyncio.run(scenario())
    assert path.read_bytes() == b"committed"
    assert len(opened) == 2  # reopened once, to cut back
