"""ClamdScanner against a real clamd (TCP and unix socket) and against misbehaving fakes."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.samples import EICAR
from tusingest.domain import ScanResult
from tusingest.errors import ConfigError, ScannerUnavailable
from tusingest.pipeline.scan import ClamdScanner, parse_clamd_url

# The test string is built at run time so no scanner flags the repository.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def clamd_urls() -> dict[str, str]:
    """The real clamd's TCP and unix-socket URLs; fails when it is not running."""
    tcp, sock = os.environ.get("CLAMD_URL"), os.environ.get("CLAMD_SOCKET")
    if not tcp or not sock:
        pytest.fail("CLAMD_URL / CLAMD_SOCKET not set: run scripts/services start clamd")
    urls = {"tcp": tcp, "unix": f"unix://{sock}"}
    for url in urls.values():
        try:
            asyncio.run(ClamdScanner(url, timeout=5).ping())
        except ScannerUnavailable as exc:
            pytest.fail(f"clamd does not answer ({exc}): run scripts/services start clamd")
    return urls


@pytest.fixture(params=["tcp", "unix"])
def clamd_url(request: pytest.FixtureRequest, clamd_urls: dict[str, str]) -> str:
    return clamd_urls[request.param]


def scan(url: str, path: Path, chunk_size: int = 1 << 20) -> ScanResult:
    return asyncio.run(ClamdScanner(url, timeout=30, chunk_size=chunk_size).scan(path))


def test_clean_file_is_clean(clamd_url: str, tmp_path: Path) -> None:
    path = tmp_path / "clean.txt"
    path.write_bytes(b"just some harmless text\n" * 1000)
    assert scan(clamd_url, path) == ScanResult(clean=True)


def test_eicar_is_found(clamd_url: str, tmp_path: Path) -> None:
    path = tmp_path / "eicar.com"
    path.write_bytes(EICAR)
    result = scan(clamd_url, path)
    assert not result.clean
    assert result.signature is not None
    assert "EICAR" in result.signature


def test_eicar_across_frames_in_large_file_is_found(clamd_url: str, tmp_path: Path) -> None:
    chunk = 64 << 10
    at = 40 * chunk - len(EICAR) // 2  # straddles the boundary between two frames
    data = bytearray(os.urandom(5 << 20))
    data[at : at + len(EICAR)] = EICAR
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    result = scan(clamd_url, path, chunk_size=chunk)
    assert not result.clean
    assert result.signature is not None
    assert "EICAR" in result.signature


def test_empty_file_gets_an_answer(clamd_url: str, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert isinstance(scan(clamd_url, path), ScanResult)


def test_ping(clamd_url: str) -> None:
    asyncio.run(ClamdScanner(clamd_url).ping())


def test_missing_file_is_not_a_scanner_problem(clamd_url: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(clamd_url, tmp_path / "absent")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_bytes(b"hello\n")
    return path


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_nothing_listening_is_unavailable(kind: str, small_file: Path, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{_closed_port()}" if kind == "tcp" else f"unix://{tmp_path}/no.sock"
    scanner = ClamdScanner(url, timeout=5)
    started = time.monotonic()
    with pytest.raises(ScannerUnavailable, match="cannot connect"):
        asyncio.run(scanner.scan(small_file))
    with pytest.raises(ScannerUnavailable):
        asyncio.run(scanner.ping())
    assert time.monotonic() - started < 2


async def _with_fake(handler: Handler, run: Callable[[str], Awaitable[object]]) -> object:
    """Run `run(url)` against an asyncio server on 127.0.0.1 whose connections `handler` serves."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await run(f"tcp://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()


def test_silent_clamd_times_out(small_file: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept everything, answer nothing, until the client gives up
        writer.close()

    started = time.monotonic()
    with pytest.raises(ScannerUnavailable, match="no answer"):
        asyncio.run(_with_fake(silent, lambda url: ClamdScanner(url, timeout=1).scan(small_file)))
    assert time.monotonic() - started < 2


def _replying(reply: bytes) -> Handler:
    """A fake clamd that reads the whole INSTREAM request, then sends `reply` and hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        while size := struct.unpack("!L", await reader.readexactly(4))[0]:
            await reader.readexactly(size)
        writer.write(reply)
        await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize(
    "reply",
    [
        b"INSTREAM size limit exceeded. ERROR\0",
        b"stream: Can't allocate memory ERROR\0",
        b"stream: OK",  # cut off before its NUL: not a complete answer
        b"stream:  FOUND\0",
        b"PONG\0",
        b"",
    ],
)
def test_anything_but_a_verdict_is_unavailable(reply: bytes, small_file: Path) -> None:
    with pytest.raises(ScannerUnavailable):
        asyncio.run(_with_fake(_replying(reply), lambda url: ClamdScanner(url).scan(small_file)))


def test_limit_exceeded_while_sending_is_unavailable(tmp_path: Path) -> None:
    """clamd answers the size-limit ERROR and hangs up mid-stream: reset / broken pipe."""

    async def limit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        await reader.readexactly(64 << 10)
        writer.write(b"INSTREAM size limit exceeded. ERROR\0")
        await writer.drain()
        writer.close()

    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(8 << 20))
    with pytest.raises(ScannerUnavailable):
        asyncio.run(_with_fake(limit, lambda url: ClamdScanner(url, timeout=10).scan(path)))


def test_frames_follow_instream_protocol(tmp_path: Path) -> None:
    """Chunk-sized frames from disk, no empty frame before the terminator."""
    frames: list[int] = []
    commands: list[bytes] = []

    async def recorder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands.append(await reader.readuntil(b"\0"))
        while True:
            size = struct.unpack("!L", await reader.readexactly(4))[0]
            frames.append(size)
            if not size:
                break
            await reader.readexactly(size)
        writer.write(b"stream: OK\0")
        await writer.drain()
        writer.close()

    path = tmp_path / "data"
    path.write_bytes(os.urandom(3 * 1000 + 17))
    result = asyncio.run(
        _with_fake(recorder, lambda url: ClamdScanner(url, chunk_size=1000).scan(path))
    )
    assert result == ScanResult(clean=True)
    assert commands == [b"zINSTREAM\0"]
    assert frames == [1000, 1000, 1000, 17, 0]


def test_ping_with_wrong_answer_is_unavailable() -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.write(b"PANG\0")
        await writer.drain()
        writer.close()

    with pytest.raises(ScannerUnavailable, match="PANG"):
        asyncio.run(_with_fake(wrong, lambda url: ClamdScanner(url).ping()))


@pytest.mark.parametrize(
    "url",
    [
        "http://x",
        "tcp://nohostport",
        "tcp://:3310",
        "tcp://host:notaport",
        "tcp://host:99999",
        "unix://",
        "unix://relative.sock",
        "",
    ],
)
def test_bad_url_is_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="CLAMD_URL") as info:
        ClamdScanner(url)
    assert info.value.variable == "CLAMD_URL"


def test_good_urls_parse() -> None:
    assert parse_clamd_url("tcp://127.0.0.1:3310") == ("127.0.0.1", 3310)
    assert parse_clamd_url("tcp://[::1]:3310") == ("::1", 3310)
    assert parse_clamd_url("unix:///run/clamav/clamd.ctl") == Path("/run/clamav/clamd.ctl")
