"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1 in its own thread and loop,
on a port that stays the same across `stop()` and `start()` (a receiver that goes down and comes
back), verifying each request's signature as the README tells receivers to.

    receiver = Receiver(secret)          # not listening yet: the port refuses connections
    receiver.start(answer=503)           # up, but answering 503 to everything
    receiver.answer = 0                  # holds every request until stop() (a hung receiver)
    receiver.answer = 200                # takes events; receiver.accepted() lists them
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.nodes import free_port


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The README's check: `X-Tusingest-Signature` is `sha256=` and the hex HMAC-SHA256 of
    `{X-Tusingest-Timestamp}.{raw body}` keyed by the secret."""
    timestamp = headers["X-Tusingest-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(headers["X-Tusingest-Signature"], f"sha256={expected}")


@dataclass(frozen=True)
class Received:
    """One request the receiver got, and what it answered (0: none, it was held)."""

    headers: dict[str, str]
    body: bytes
    status: int
    signed: bool  # the signature checks out with the receiver's secret
    at: float  # time.monotonic() on arrival

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def delivery(self) -> str:
        return self.headers["X-Tusingest-Delivery"]


class Receiver:
    def __init__(self, secret: str, *, path: str = "/hooks/tusingest?token=t0ps3cret") -> None:
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.answer = 200  # what the next requests get; 0 holds them until stop()
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    def start(self, answer: int = 200) -> Receiver:
        self.answer = answer
        self._started.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        """Close the port; requests held get no answer (their connection is closed)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def accepted(self) -> list[Received]:
        """The requests answered 2xx: the events delivered."""
        return [r for r in self.received() if 200 <= r.status < 300]

    def wait_accepted(self, count: int, seconds: float = 30) -> list[Received]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if len(self.accepted()) >= count:
                return self.accepted()
            time.sleep(0.05)
        raise AssertionError(f"{len(self.accepted())} of {count} events arrived: {self.received()}")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()
        # Requests still held end here, unanswered (their connections are closed already).
        held = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        answer = self.answer
        signed = verify(self.secret, headers, body)
        with self._lock:
            self._received.append(Received(headers, body, answer, signed, time.monotonic()))
        if answer == 0:
            await asyncio.sleep(3600)  # cancelled when the receiver stops
        # A redirect points back here: a sender that followed it would come again.
        location = {"Location": self.url} if 300 <= answer < 400 else None
        return web.Response(status=answer, text="ok" if answer < 300 else "no", headers=location)
