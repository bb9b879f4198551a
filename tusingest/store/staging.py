"""Staging bytes on disk: one file per upload, written at the committed offset, fsynced."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tusingest import diskio
from tusingest.errors import NotFound

_ID = re.compile(r"[0-9a-f]{32}")
# The first bytes of a staged file stay in the page cache after their fsync (see
# `_sync_and_drop`); the type sniff at completion reads less than this.
KEEP_CACHED_HEAD = 64 << 10


class FileStaging:
    """Implements `Staging` on a (possibly shared) directory."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def path(self, upload_id: str) -> Path:
        if not _ID.fullmatch(upload_id):
            raise NotFound("upload not found")
        return self._root / upload_id

    async def create(self, upload_id: str) -> None:
        path = self.path(upload_id)

        def _create() -> None:
            self._root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            os.close(fd)

        await asyncio.to_thread(_create)

    async def writer(
        self, upload_id: str, offset: int, reserve: int | None = None
    ) -> FileStagingWriter:
        path = self.path(upload_id)

        def open_file() -> int:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                # Bytes past the committed offset belong to no acknowledged request. (Only
                # truncate when there are some: truncating frees the reserved blocks too.)
                if os.fstat(fd).st_size > offset:
                    os.ftruncate(fd, offset)
                if reserve is not None and reserve > offset:
                    diskio.reserve(fd, offset, reserve - offset)
            except BaseException:
                os.close(fd)
                raise
            return fd

        return FileStagingWriter(open_file, offset)

    async def assemble(self, upload_id: str, parts: Sequence[tuple[str, int]]) -> None:
        target = self.path(upload_id)
        sources = [(self.path(part), length) for part, length in parts]
        await asyncio.to_thread(_assemble, target, sources)

    async def delete(self, upload_id: str) -> None:
        path = self.path(upload_id)
        await asyncio.to_thread(path.unlink, True)

    async def stale(self, older_than_seconds: float) -> list[str]:
        def _stale() -> list[str]:
            cutoff = time.time() - older_than_seconds
            found = []
            with os.scandir(self._root) as entries:
                for entry in entries:
                    if _ID.fullmatch(entry.name) and entry.stat().st_mtime < cutoff:
                        found.append(entry.name)
            return found

        try:
            return await asyncio.to_thread(_stale)
        except FileNotFoundError:
            return []

    async def size(self, upload_id: str) -> int | None:
        path = self.path(upload_id)

        def _size() -> int | None:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(_size)


class FileStagingWriter:
    """Writes batches with pwritev at the running position, off the event loop; the file is
    opened with the first batch (in the same worker call) and its writeback started at once.
    The last write (`sync`) also closes it, in the same call: no hop of its own to close."""

    def __init__(self, open_file: Callable[[], int], start: int) -> None:
        self._open_file = open_file
        self._fd = -1
        self._start = start
        self._written = 0
        self._finished = False  # the last write is done and the file closed

    @property
    def written(self) -> int:
        return self._written

    async def write(
        self,
        buffers: Sequence[bytes | memoryview],
        *,
        feed: Sequence[Callable[[bytes | memoryview], object]] = (),
        sync: bool = False,
    ) -> None:
        if self._finished:
            raise RuntimeError("a staging writer takes nothing after its last (synced) write")
        position = self._start + self._written
        size = sum(len(b) for b in buffers)
        await asyncio.to_thread(self._write, buffers, position, size, feed, sync)
        self._written += size

    def _write(
        self,
        buffers: Sequence[bytes | memoryview],
        position: int,
        size: int,
        feed: Sequence[Callable[[bytes | memoryview], object]],
        sync: bool,
    ) -> None:
        if self._fd < 0:
            self._fd = self._open_file()
        diskio.pwrite_all(self._fd, buffers, position)
        # The disk takes these bytes while they are hashed: the fdatasync of the last write
        # finds less left to do (1 MiB written, hashed and synced: 1.08 → 0.76 ms here).
        diskio.start_writeback(self._fd, position, size)
        for consume in feed:
            for buffer in buffers:
                consume(buffer)
        if sync:
            fd, self._fd = self._fd, -1
            try:
                _sync_and_drop(fd, self._start, position + size - self._start)
            finally:
                os.close(fd)
            self._finished = True

    async def sync(self) -> None:
        if self._fd >= 0:
            await asyncio.to_thread(_sync_and_drop, self._fd, self._start, self._written)

    async def discard(self) -> None:
        written, self._written = self._written, 0
        if self._fd >= 0:
            await asyncio.to_thread(os.ftruncate, self._fd, self._start)
        elif written:  # closed by its last write: opening cuts the file back to the start
            await asyncio.to_thread(lambda: os.close(self._open_file()))

    async def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            await asyncio.to_thread(os.close, fd)


def _sync_and_drop(fd: int, start: int, length: int) -> None:
    """fdatasync (the data and the size that reaches it, not timestamps), then let the kernel
    reuse those now-clean cache pages: staged bytes are read again only once, at completion,
    and recycling warm pages keeps writes cheap and the page cache unpolluted. The file's
    head stays cached: completion reads it at once (the type sniff), and dropping it would
    turn every small upload's completion into a disk read."""
    os.fdatasync(fd)
    dropped = to_drop(start, length)
    if dropped is not None:
        os.posix_fadvise(fd, *dropped, os.POSIX_FADV_DONTNEED)


def to_drop(start: int, length: int) -> tuple[int, int] | None:
    """The (offset, length) of `length` bytes written at `start` that leave the page cache
    once synced: all past the file's first `KEEP_CACHED_HEAD` bytes; None for none."""
    drop_from = max(start, KEEP_CACHED_HEAD)
    end = start + length
    return (drop_from, end - drop_from) if end > drop_from else None


def _assemble(target: Path, sources: Sequence[tuple[Path, int]]) -> None:
    """Concatenate in the kernel (copy_file_range: reflinks or in-kernel copies), fsync."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        position = 0
        for source, length in sources:
            src = os.open(source, os.O_RDONLY)
            try:
                diskio.copy_range(src, fd, dst_offset=position, length=length)
            finally:
                os.close(src)
            position += length
        os.fsync(fd)
    finally:
        os.close(fd)
