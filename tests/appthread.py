"""An aiohttp app served on 127.0.0.1 from a thread and event loop of its own, for test
stand-ins that a synchronous test drives (elements behind a fault-injecting front, an Admin
Module that misbehaves, a recording proxy)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serving(make_app: Callable[[], web.Application], port: int = 0) -> Iterator[str]:
    """`make_app()` (called in the serving loop) on `port` (0: a free one) while the block
    runs; yields its base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    url: list[str] = []

    async def main() -> None:
        runner = web.AppRunner(make_app(), shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        host, bound = runner.addresses[0][:2]
        url.append(f"http://{host}:{bound}")
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(15), "the app did not start"
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()
