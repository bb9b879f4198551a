"""Receive buffers shared out among the bodies streaming at once (`tusingest.intake`), over
real sockets: alone a stream reads with the defaults, in a crowd each gets a smaller socket
read and body buffer, and a stream that ends gives its share back."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tusingest.intake import BUFFER_MAX, BUFFER_MIN, RECV_MAX, RECV_MIN, Intake


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
