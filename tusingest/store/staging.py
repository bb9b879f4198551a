"""Staging bytes on disk: one file per upload, written at the committed offset, fsynced."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from tusingest.errors import NotFound

_ID = re.compile(r"[0-9a-f]{32}")
_FLUSH_BYTES = 1 << 20
_FLUSH_BUFFERS = 256  # well below IOV_MAX for pwritev


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

    async def writer(self, upload_id: str, offset: int) -> FileStagingWriter:
        path = self.path(upload_id)

        def _open() -> int:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                # Bytes past the committed offset belong to no acknowledged request.
                os.ftruncate(fd, offset)
            except BaseException:
                os.close(fd)
                raise
            return fd

        return FileStagingWriter(await asyncio.to_thread(_open), offset)

    async def delete(self, upload_id: str) -> None:
        path = self.path(upload_id)
        await asyncio.to_thread(path.unlink, True)

    async def size(self, upload_id: str) -> int | None:
        path = self.path(upload_id)

        def _size() -> int | None:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(_size)


class FileStagingWriter:
    """Buffers up to 1 MiB, writes with pwritev off the event loop, fsyncs on demand."""

    def __init__(self, fd: int, start: int) -> None:
        self._fd = fd
        self._start = start
        self._written = 0
        self._flushed = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    @property
    def written(self) -> int:
        return self._written

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        self._written += len(data)
        if self._pending_size >= _FLUSH_BYTES or len(self._pending) >= _FLUSH_BUFFERS:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        buffers, self._pending, self._pending_size = self._pending, [], 0
        position = self._start + self._flushed
        await asyncio.to_thread(_pwrite_all, self._fd, buffers, position)
        self._flushed += sum(len(b) for b in buffers)

    async def sync(self) -> None:
        await self._flush()
        await asyncio.to_thread(os.fsync, self._fd)

    async def discard(self) -> None:
        self._pending, self._pending_size = [], 0
        self._written = self._flushed = 0
        await asyncio.to_thread(os.ftruncate, self._fd, self._start)

    async def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            await asyncio.to_thread(os.close, fd)


def _pwrite_all(fd: int, buffers: list[bytes], position: int) -> None:
    views = [memoryview(b) for b in buffers]
    while views:
        n = os.pwritev(fd, views, position)
        position += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
