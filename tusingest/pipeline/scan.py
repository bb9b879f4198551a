"""Virus scanning with clamd: a small asyncio INSTREAM client over TCP or a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from tusingest.domain import ScanResult
from tusingest.errors import ConfigError, ScannerUnavailable

ClamdAddress = tuple[str, int] | Path  # (host, port) for TCP, the socket path for unix
_FRAME = struct.Struct("!L")
_END = _FRAME.pack(0)
_PING_TIMEOUT = 5.0  # a health probe must not hang for a whole scan's timeout


def parse_clamd_url(url: str) -> ClamdAddress:
    """`tcp://host:port` or `unix:///path/to/clamd.sock`; ConfigError("CLAMD_URL") otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ConfigError("CLAMD_URL", f"expected tcp://host:port, got {url!r}")
        return (parts.hostname, port)
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError("CLAMD_URL", f"expected unix:///absolute/path, got {url!r}")
        return Path(parts.path)
    raise ConfigError("CLAMD_URL", f"expected a tcp:// or unix:// URL, got {url!r}")


class ClamdScanner:
    """Implements `Scanner` with clamd's INSTREAM command, streaming the file from disk.

    Fails closed: only `stream: OK` is clean; `<sig> FOUND` is a verdict; everything else
    (ERROR replies, resets, refusals, timeouts, garbage) raises `ScannerUnavailable`.
    """

    def __init__(self, url: str, timeout: float = 300.0, chunk_size: int = 1 << 20) -> None:
        if timeout <= 0 or not 0 < chunk_size < 1 << 32:
            raise ValueError("timeout and chunk_size must be positive")
        self._url = url
        self._address = parse_clamd_url(url)
        self._timeout = timeout
        self._chunk_size = chunk_size

    @property
    def url(self) -> str:
        return self._url

    async def scan(self, path: Path) -> ScanResult:
        # Opened before connecting: a missing staging file is our error, not the scanner's.
        file = await asyncio.to_thread(open, path, "rb")
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._instream(file)
        except TimeoutError:
            raise self._unavailable(f"no answer within {self._timeout:g} s") from None
        finally:
            await asyncio.to_thread(file.close)
        if reply == "stream: OK":
            return ScanResult(clean=True)
        if reply.startswith("stream: ") and reply.endswith(" FOUND"):
            signature = reply.removeprefix("stream: ").removesuffix(" FOUND").strip()
            if signature:
                return ScanResult(clean=False, signature=signature)
        raise self._unavailable(f"unexpected reply {reply!r}")

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(min(self._timeout, _PING_TIMEOUT)):
                reader, writer = await self._connect()
                try:
                    await self._send(writer, b"zPING\0")
                    reply = await self._reply(reader)
                finally:
                    await _close(writer)
        except TimeoutError:
            raise self._unavailable("no answer to PING") from None
        if reply != "PONG":
            raise self._unavailable(f"unexpected reply to PING: {reply!r}")

    async def _instream(self, file: BinaryIO) -> str:
        reader, writer = await self._connect()
        try:
            await self._send(writer, b"zINSTREAM\0")
            # File reads stay outside the network error mapping: a disk error is not clamd's.
            while chunk := await asyncio.to_thread(file.read, self._chunk_size):
                await self._send(writer, _FRAME.pack(len(chunk)), chunk)
            await self._send(writer, _END)
            return await self._reply(reader)
        finally:
            await _close(writer)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            if isinstance(self._address, Path):
                return await asyncio.open_unix_connection(self._address)
            host, port = self._address
            return await asyncio.open_connection(host, port)
        except OSError as exc:
            raise self._unavailable(f"cannot connect: {exc}") from exc

    async def _send(self, writer: asyncio.StreamWriter, *data: bytes) -> None:
        try:
            for part in data:
                writer.write(part)
            await writer.drain()
        except OSError as exc:
            # clamd drops the connection when the stream passes StreamMaxLength or a frame
            # takes longer than its ReadTimeout.
            raise self._unavailable(
                f"connection lost while sending ({exc}); stream too large for clamd's "
                "StreamMaxLength, or slower than its ReadTimeout?"
            ) from exc

    async def _reply(self, reader: asyncio.StreamReader) -> str:
        try:
            raw = await reader.readuntil(b"\0")
        except asyncio.IncompleteReadError as exc:
            raise self._unavailable(f"connection closed before a reply ({exc.partial!r})") from exc
        except asyncio.LimitOverrunError as exc:
            raise self._unavailable("reply too long") from exc
        except OSError as exc:
            raise self._unavailable(f"connection lost while waiting for the reply: {exc}") from exc
        return raw[:-1].decode("utf-8", "replace").strip()

    def _unavailable(self, message: str) -> ScannerUnavailable:
        return ScannerUnavailable(f"clamd at {self._url}: {message}")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
