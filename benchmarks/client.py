"""The benchmark's HTTP/1.1 client: one keep-alive connection over a raw non-blocking socket.

Owns the wire format the workloads speak. It is deliberately minimal instead of aiohttp's
client: on a small machine the client shares the CPUs with the server under test, so every
request should cost it as little as possible, and bodies go out with `Content-Length` straight
from a `memoryview` (`loop.sock_sendall`, no copy, no chunked encoding). Responses are parsed
just enough for tus: status, headers, and a `Content-Length` or chunked body (none for HEAD,
1xx, 204, 304).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass

_RECV_BYTES = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024
# Bodies up to this size go out in the same send as the request head.
_INLINE_BODY_BYTES = 64 * 1024

Body = bytes | memoryview


class HttpError(Exception):
    """The exchange failed: connection, timeout, or a response that is not HTTP/1.1."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def describe(self) -> str:
        text = self.body[:200].decode("utf-8", "replace").strip()
        return f"{self.status} {text}" if text else str(self.status)


class Connection:
    """A persistent connection to `host:port`; reconnects after the server closes it."""

    def __init__(self, host: str, port: int, headers: Mapping[str, str] | None = None) -> None:
        self._address = (host, port)
        common = {"Host": f"{host}:{port}", **(headers or {})}
        self._common = "".join(f"{k}: {v}\r\n" for k, v in common.items()).encode("latin-1")
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    async def connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.get_running_loop().sock_connect(sock, self._address)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buffer.clear()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer.clear()
        if sock is not None:
            sock.close()

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        timeout_s: float = 60.0,
    ) -> Response:
        try:
            async with asyncio.timeout(timeout_s):
                return await self._exchange(method, path, headers, body)
        except TimeoutError:
            self.close()
            raise HttpError(f"{method} {path}: no response within {timeout_s:g} s") from None
        except OSError as exc:
            self.close()
            raise HttpError(f"{method} {path}: {exc!r}") from None
        except HttpError as exc:
            self.close()
            raise HttpError(f"{method} {path}: {exc}") from None
        except BaseException:
            self.close()
            raise

    async def _exchange(
        self, method: str, path: str, headers: Mapping[str, str] | None, body: Body | None
    ) -> Response:
        await self.connect()
        sock = self._sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        parts: list[Body] = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._common]
        if headers:
            parts.append("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1"))
        if body is not None or method in ("POST", "PATCH", "PUT"):
            parts.append(b"Content-Length: %d\r\n" % (len(body) if body is not None else 0))
        parts.append(b"\r\n")
        try:
            if body is not None and len(body) <= _INLINE_BODY_BYTES:
                parts.append(body)
                await loop.sock_sendall(sock, b"".join(parts))
            else:
                await loop.sock_sendall(sock, b"".join(parts))
                if body is not None:
                    await loop.sock_sendall(sock, body)
        except OSError as exc:
            # The server may have answered early (413, 409) and closed: prefer its answer.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    return await self._read_response(method)
            raise HttpError(f"sending the request failed: {exc!r}") from None
        return await self._read_response(method)

    async def _fill(self) -> bool:
        """Receive more bytes into the buffer; False at end of stream."""
        assert self._sock is not None
        data = await asyncio.get_running_loop().sock_recv(self._sock, _RECV_BYTES)
        if not data:
            return False
        self._buffer += data
        return True

    async def _need(self, size: int) -> None:
        while len(self._buffer) < size:
            if not await self._fill():
                raise HttpError("the server closed the connection mid-response")

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if not await self._fill():
                raise HttpError("the server closed the connection mid-response")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _read_response(self, method: str) -> Response:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                raise HttpError("response head too large")
            if not await self._fill():
                raise HttpError("the server closed the connection without a response")
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise HttpError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        body = b""
        close = headers.get("connection", "").lower() == "close"
        if method != "HEAD" and status >= 200 and status not in (204, 304):
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = await self._chunked()
            elif (length := headers.get("content-length")) is not None:
                size = int(length)
                await self._need(size)
                body = bytes(buffer[:size])
                del buffer[:size]
            else:  # delimited by the end of the connection
                while await self._fill():
                    pass
                body, close = bytes(buffer), True
        if close:
            self.close()
        return Response(status, headers, body)

    async def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(bytes(await self._line()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                return bytes(out)
            await self._need(size + 2)
            out += self._buffer[:size]
            del self._buffer[: size + 2]
