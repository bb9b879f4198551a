"""Disk I/O with durability in mind: positioned writes, block reservation, in-kernel copies and
the fsyncs that make new files and renames survive a crash. Blocking: call off the event loop."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_IOV_MAX = 512  # well below the kernel's IOV_MAX (1024) for one pwritev
_COPY_CHUNK = 64 << 20
# copy_file_range is missing or refuses this pair of files: sendfile does the rest.
_NO_COPY_FILE_RANGE = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}
)
_FALLOC_FL_KEEP_SIZE = 1
_SYNC_FILE_RANGE_WRITE = 2


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_hashed(out: IO[bytes], digest: Any, chunk: bytes) -> None:
    """Append `chunk` to `out` and to the running `digest`."""
    out.write(chunk)
    digest.update(chunk)


def sync_file(out: IO[bytes]) -> None:
    """Flush `out` and put its bytes on disk."""
    out.flush()
    os.fsync(out.fileno())


def pwrite_all(fd: int, buffers: Sequence[bytes | memoryview], position: int) -> None:
    """Write every buffer at `position` onwards (pwritev, resumed after short writes)."""
    views = [memoryview(b) for b in buffers]
    while views:
        n = os.pwritev(fd, views[:_IOV_MAX], position)
        position += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate the blocks a file will fill, keeping its size (fallocate with
    FALLOC_FL_KEEP_SIZE): writes then land in allocated extents, which makes each fsync
    several times cheaper on ext4/xfs. Best effort: unsupported filesystems skip it, and a
    full disk is reported by the write itself."""
    libc = _libc()
    if libc is not None:
        libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these bytes to disk now (sync_file_range with
    SYNC_FILE_RANGE_WRITE, no waiting), so the fsync that makes them durable later finds
    little left to do. Best effort."""
    libc = _libc()
    if libc is not None:
        libc.sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def copy_range(
    src: int, dst: int, *, src_offset: int = 0, dst_offset: int = 0, length: int | None = None
) -> int:
    """Copy `length` bytes (None: up to the end of `src`) in the kernel, never through a Python
    buffer: copy_file_range (reflinks or in-kernel copies), sendfile where the filesystem or
    kernel lacks it. Returns the bytes copied; a source shorter than `length` raises."""
    copied = 0
    use_sendfile = False
    while length is None or copied < length:
        want = _COPY_CHUNK if length is None else min(_COPY_CHUNK, length - copied)
        n = -1
        if not use_sendfile:
            try:
                n = os.copy_file_range(src, dst, want, src_offset + copied, dst_offset + copied)
            except OSError as exc:
                if exc.errno not in _NO_COPY_FILE_RANGE:
                    raise
                use_sendfile = True
        if use_sendfile:
            os.lseek(dst, dst_offset + copied, os.SEEK_SET)
            n = os.sendfile(dst, src, src_offset + copied, want)
        if n == 0:
            if length is None:
                break
            raise OSError(errno.EIO, f"the source ended after {copied} of {length} bytes")
        copied += n
    return copied


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        libc.sync_file_range.argtypes = [
            ctypes.c_int,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_uint,
        ]
    except (OSError, AttributeError):
        return None
    return libc
