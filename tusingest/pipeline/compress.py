"""Optional compression of completed uploads: which types, whether worthwhile, streamed to disk."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import brotli

from tusingest.diskio import fsync_dir
from tusingest.pipeline.jobstate import from_json
from tusingest.settings.pipeline import CompressionSettings

T = TypeVar("T")

_CHUNK = 1 << 20
_SAMPLE = 1 << 20
_SUFFIXES = {"brotli": ".br", "gzip": ".gz"}
_MEDIA_TYPES = {"brotli": "application/x-brotli", "gzip": "application/gzip"}

_TEXT_LIKE = frozenset(
    {
        "application/json",
        "application/xml",
        "image/svg+xml",
        "application/pdf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/rtf",
    }
)
_DOCUMENT_PREFIXES = (
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
)


@dataclass(frozen=True)
class Compressed:
    """The stored (compressed) file: its codec, size and digests."""

    path: Path
    codec: str
    size: int
    sha256: str
    md5: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_json(cls, raw: Any) -> Compressed | None:
        return from_json(cls, raw, {"path": Path})

    def still_there(self) -> bool:
        """Whether the copy is on disk whole (a persisted result is reused only then)."""
        try:
            return self.path.stat().st_size == self.size
        except FileNotFoundError:
            return False


def stored_form(name: str, content_type: str, codec: str | None) -> tuple[str, str]:
    """The filename and content type a copy compressed with `codec` is stored under: the
    codec's suffix and media type (`notes.txt` → `notes.txt.br`, `application/x-brotli`), so
    that every reader of the element sees what the bytes are. Unchanged without a codec."""
    if codec is None:
        return name, content_type
    if codec not in _SUFFIXES:
        raise ValueError(f"unknown codec {codec!r}")
    return name + _SUFFIXES[codec], _MEDIA_TYPES[codec]


def is_compressible(content_type: str) -> bool:
    """Text-like and document types; never media, archives or opaque binaries."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or mime in _TEXT_LIKE or mime.startswith(_DOCUMENT_PREFIXES)


async def maybe_compress(
    source: Path, content_type: str, size: int, settings: CompressionSettings, workdir: Path
) -> Compressed | None:
    """Compress `source` into `workdir`; None when off, too small, of an unsuitable type, or
    not worthwhile (judged on a sample first, then on the whole output)."""
    if not settings.enabled or size < settings.min_size or not is_compressible(content_type):
        return None
    if await asyncio.to_thread(_sample_ratio, source, settings) < settings.min_ratio:
        return None
    result = await _cancellable(_compress_file, source, settings, workdir)
    if size < result.size * settings.min_ratio:  # the sample did not represent the whole file
        await asyncio.to_thread(result.path.unlink, True)
        return None
    return result


def remove_copies(workdir: Path, name: str) -> None:
    """Remove what compressing the file `name` may have left in `workdir` (a finished or an
    interrupted copy), without listing the directory."""
    for suffix in _SUFFIXES.values():
        (workdir / f"{name}{suffix}").unlink(missing_ok=True)
    for algorithm in _SUFFIXES:
        (workdir / f"{name}.{algorithm}.tmp").unlink(missing_ok=True)


async def decompress_to(path: Path, codec: str, dest: Path) -> int:
    """Stream-decompress `path` into `dest` (fsynced); returns the decompressed size."""
    if codec not in _SUFFIXES:
        raise ValueError(f"unknown codec {codec!r}")
    return await _cancellable(_decompress_file, path, codec, dest)


_Encoder = tuple[Callable[[bytes | memoryview], bytes], Callable[[], bytes]]  # process, finish


def _encoder(settings: CompressionSettings) -> _Encoder:
    if settings.algorithm == "gzip":
        z = zlib.compressobj(settings.level, zlib.DEFLATED, 31)  # wbits 16+15: a .gz stream
        return z.compress, z.flush
    b = brotli.Compressor(quality=settings.level, lgwin=22)
    return b.process, b.finish


class _Stopped(Exception):
    """The awaiting task was cancelled; the worker stops at its next chunk."""


async def _cancellable(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args, stop)` in a thread; on cancellation, stop it and wait for its cleanup."""
    stop = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, stop))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        raise


def _sample_ratio(source: Path, settings: CompressionSettings) -> float:
    with source.open("rb") as f:
        sample = f.read(_SAMPLE)
    process, finish = _encoder(settings)
    packed = len(process(sample)) + len(finish())
    return len(sample) / max(packed, 1)


def _compress_file(
    source: Path, settings: CompressionSettings, workdir: Path, stop: threading.Event
) -> Compressed:
    final = workdir / f"{source.name}{_SUFFIXES[settings.algorithm]}"
    temp = workdir / f"{source.name}.{settings.algorithm}.tmp"
    workdir.mkdir(parents=True, exist_ok=True)
    process, finish = _encoder(settings)
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        with source.open("rb", buffering=0) as src, temp.open("wb") as out:

            def emit(packed: bytes) -> None:
                sha256.update(packed)
                md5.update(packed)
                out.write(packed)

            while n := src.readinto(buffer):
                if stop.is_set():
                    raise _Stopped
                emit(process(view[:n]))
            emit(finish())
            out.flush()
            os.fsync(out.fileno())
            written = out.tell()
        os.replace(temp, final)
        fsync_dir(workdir)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Compressed(final, settings.algorithm, written, sha256.hexdigest(), md5.hexdigest())


def _decompress_file(path: Path, codec: str, dest: Path, stop: threading.Event) -> int:
    chunks = _gunzip if codec == "gzip" else _unbrotli
    written = 0
    try:
        with path.open("rb") as src, dest.open("wb") as out:
            for chunk in chunks(src):
                if stop.is_set():
                    raise _Stopped
                written += out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written


# Both decoders bound each output chunk (about _CHUNK), so a small bomb cannot fill memory.


def _gunzip(src: BinaryIO) -> Iterator[bytes]:
    z = zlib.decompressobj(31)
    while not z.eof and (data := src.read(_CHUNK)):
        while data:
            yield z.decompress(data, _CHUNK)
            data = z.unconsumed_tail
    yield z.flush()
    if not z.eof:
        raise ValueError("truncated gzip stream")


def _unbrotli(src: BinaryIO) -> Iterator[bytes]:
    d, eof = brotli.Decompressor(), False
    while not d.is_finished():
        data = b""
        # Output can still be pending when it already accepts more input: drain it at the end.
        if d.can_accept_more_data() and not eof:
            data = src.read(_CHUNK)
            eof = not data
        chunk = d.process(data, output_buffer_limit=_CHUNK)
        if eof and not chunk and not d.is_finished():
            raise ValueError("truncated brotli stream")
        yield chunk
