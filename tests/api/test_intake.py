"""Receive buffers shared out among the bodies streaming at once (`tusingest.intake`), over
real sockets: alone a stream reads with the defaults, in a crowd each gets a smaller socket
read and body buffer, and a stream that ends gives its share back."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tusingest.intake import (
    ARRIVAL_BUFFER,
    ARRIVAL_RECV,
    BUFFER_MAX,
    BUFFER_MIN,
    RECV_MAX,
    RECV_MIN,
    Intake,
    admit,
)
from tusingest.listener import CappedSite


def test_a_crowd_shares_the_budget() -> None:
    async def scenario() -> None:
        intake = Intake(budget=1 << 20)
        seen: list[tuple[int, int]] = []
        release = asyncio.Event()
        arrived = asyncio.Condition()

        async def until(count: int) -> None:
            async with arrived:
                await asyncio.wait_for(arrived.wait_for(lambda: len(seen) >= count), 10)

        async def handler(request: web.Request) -> web.Response:
            with intake.streaming(request):
                await request.content.readany()
                transport = request.transport
                assert transport is not None
                seen.append((transport.max_size, request.content._high_water))  # type: ignore[attr-defined]
                async with arrived:
                    arrived.notify_all()
                await release.wait()
                async for _ in request.content.iter_any():
                    pass
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_put("/", handler)
        async with TestServer(app) as server, aiohttp.ClientSession() as client:

            async def body() -> object:
                yield b"x" * 1024
                await release.wait()
                yield b"y" * 1024

            async def put() -> int:
                async with client.put(server.make_url("/"), data=body()) as response:
                    return response.status

            first = asyncio.create_task(put())
            await until(1)
            assert seen[0] == (RECV_MAX, 2 * BUFFER_MAX)  # alone: the defaults
            assert intake.share == (RECV_MAX, BUFFER_MAX)

            crowd = [asyncio.create_task(put()) for _ in range(63)]
            await until(64)
            # 1 MiB for 64 streams: 16 KiB each, below the floors of both.
            assert intake.share == (RECV_MIN, BUFFER_MIN)
            assert min(s[0] for s in seen[1:]) == RECV_MIN
            release.set()
            assert await asyncio.gather(first, *crowd) == [200] * 64
        assert intake.share == (RECV_MAX, BUFFER_MAX)  # all ended: a lone stream gets it all

    asyncio.run(scenario())


def test_a_body_waiting_for_its_handler_holds_little_until_it_streams() -> None:
    """Served as `tusingest serve` serves (the capped site admitting each connection, the
    runner's small `read_bufsize`): a 4 MiB body whose handler has not begun streaming it is
    buffered only up to the arrival limits; streaming alone, it reads with the defaults; when it
    ends, the connection is back to the arrival limits for its next request."""

    async def scenario() -> None:
        intake = Intake()
        waiting: list[tuple[int, int, int]] = []
        streaming: list[tuple[int, int]] = []
        after: list[int] = []
        go = asyncio.Event()

        async def handler(request: web.Request) -> web.Response:
            transport = request.transport
            assert transport is not None
            await asyncio.sleep(0.5)  # the body keeps arriving; the handler is not reading
            content = request.content
            waiting.append(
                (transport.max_size, content._high_water, content.total_bytes)  # type: ignore[attr-defined]
            )
            go.set()
            with intake.streaming(request):
                streaming.append((transport.max_size, content._high_water))  # type: ignore[attr-defined]
                received = 0
                async for chunk in content.iter_any():
                    received += len(chunk)
            after.append(transport.max_size)  # the connection's next body arrives small again
            return web.Response(text=str(received))

        app = web.Application()
        app.router.add_put("/", handler)
        runner = web.AppRunner(app, read_bufsize=ARRIVAL_BUFFER)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        try:
            await CappedSite(runner, sock, max_connections=8, on_connection=admit).start()
            async with aiohttp.ClientSession() as client:
                body = b"z" * (4 << 20)
                async with client.put(f"http://127.0.0.1:{port}/", data=body) as response:
                    assert response.status == 200
                    assert await response.text() == str(len(body))
        finally:
            await runner.cleanup()
        assert go.is_set()
        max_size, high_water, buffered = waiting[0]
        assert (max_size, high_water) == (ARRIVAL_RECV, 2 * ARRIVAL_BUFFER)
        # Paused past the high-water mark: at most one socket read beyond it.
        assert buffered <= 2 * ARRIVAL_BUFFER + ARRIVAL_RECV
        assert streaming == [(RECV_MAX, 2 * BUFFER_MAX)]
        assert after == [ARRIVAL_RECV]

    asyncio.run(scenario())
