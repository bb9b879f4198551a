"""What a synced staging write leaves in the page cache: the file's head (read at once by the
completion's type sniff), not what requests write past it (read never again). The head is
probed with preadv(RWF_NOWAIT), which fails with EAGAIN instead of reading from the disk."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tusingest.pipeline.validate import SNIFF_BYTES
from tusingest.store.staging import KEEP_CACHED_HEAD, FileStagingWriter, to_drop

pytestmark = pytest.mark.skipif(
    not hasattr(os, "RWF_NOWAIT"), reason="preadv(RWF_NOWAIT) is Linux-only"
)


def _cached(path: Path, offset: int, length: int = 4096) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(length)], offset, os.RWF_NOWAIT)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _write_synced(path: Path, start: int, data: bytes) -> None:
    writer = FileStagingWriter(lambda: os.open(path, os.O_WRONLY | os.O_CREAT, 0o640), start)
    asyncio.run(writer.write([data], sync=True))


def test_a_small_upload_stays_cached_for_the_type_sniff(tmp_path: Path) -> None:
    assert SNIFF_BYTES <= KEEP_CACHED_HEAD
    path = tmp_path / "upload"
    _write_synced(path, 0, os.urandom(KEEP_CACHED_HEAD))
    assert _cached(path, 0, SNIFF_BYTES)
    assert _cached(path, KEEP_CACHED_HEAD - 4096)


def test_a_later_patch_keeps_the_head_cached(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    _write_synced(path, 0, os.urandom(KEEP_CACHED_HEAD))
    _write_synced(path, KEEP_CACHED_HEAD, os.urandom(2 * KEEP_CACHED_HEAD))
    assert _cached(path, 0, SNIFF_BYTES)


def test_what_is_dropped_is_all_written_past_the_head() -> None:
    # What is asked of the kernel: it may keep a page another CPU still holds in its batch of
    # new pages, so the page cache itself is not probed for what was dropped.
    head = KEEP_CACHED_HEAD
    assert to_drop(0, head) is None
    assert to_drop(0, SNIFF_BYTES) is None
    assert to_drop(0, 4 * head) == (head, 3 * head)
    assert to_drop(head, 2 * head) == (head, 2 * head)
    assert to_drop(head // 2, head) == (head, head // 2)
    assert to_drop(5 * head, 0) is None
