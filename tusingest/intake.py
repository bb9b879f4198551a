"""Socket reads and body buffers shared out among the requests streaming bodies at once: a crowd
of uploads gets smaller reads each, so memory stays bounded however many stream together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import StreamReader, web

# What one stream may hold: a socket read in flight plus the body buffer (aiohttp pauses the
# socket past twice its limit). Alone, a stream gets asyncio's and aiohttp's defaults.
RECV_MAX, RECV_MIN = 256 << 10, 16 << 10
BUFFER_MAX, BUFFER_MIN = 64 << 10, 8 << 10
BUDGET_BYTES = 16 << 20  # for all streams together, once there are many
# A connection starts small (the listener's `admit`, the runner's `read_bufsize`) and a request
# gets its share only once its handler streams the body: a crowd of requests still waiting for
# their handler (authentication, the upload's lock) holds little each.
ARRIVAL_RECV, ARRIVAL_BUFFER = RECV_MIN, BUFFER_MIN


class Intake:
    """Shares `budget` bytes among the requests streaming now: each gets a socket read size
    and a body-buffer limit (powers of two, within the bounds above), updated for all of them
    as streams begin and end."""

    def __init__(self, budget: int = BUDGET_BYTES) -> None:
        self._budget = budget
        self._streams: dict[int, tuple[asyncio.BaseTransport, StreamReader]] = {}
        self._share = (RECV_MAX, BUFFER_MAX)

    @property
    def share(self) -> tuple[int, int]:
        """(socket read size, body-buffer limit) of each stream now."""
        return self._share

    @contextlib.contextmanager
    def streaming(self, request: web.Request) -> Iterator[None]:
        transport = request.transport
        if transport is None:
            yield
            return
        key = id(request)
        self._streams[key] = (transport, request.content)
        self._reshare(force=key)
        try:
            yield
        finally:
            # Back to small reads: on a keep-alive connection the next body starts arriving
            # before its handler runs, and a crowd of those must not hold full shares.
            del self._streams[key]
            admit(transport)
            self._reshare()

    def _reshare(self, force: int | None = None) -> None:
        each = self._budget // max(1, len(self._streams))
        share = (
            _bounded(each // 2, RECV_MIN, RECV_MAX),
            _bounded(each // 4, BUFFER_MIN, BUFFER_MAX),
        )
        if share != self._share:
            self._share = share
            targets = list(self._streams.values())
        elif force is not None:
            targets = [self._streams[force]]
        else:
            return
        for transport, reader in targets:
            _apply(transport, reader, share)


def admit(transport: asyncio.BaseTransport) -> None:
    """A new connection reads in small pieces until a request of it streams a body."""
    if hasattr(transport, "max_size"):
        transport.max_size = ARRIVAL_RECV


def _apply(transport: asyncio.BaseTransport, reader: StreamReader, share: tuple[int, int]) -> None:
    recv, limit = share
    # asyncio's selector transport reads `max_size` bytes per recv (uvloop and TLS have none).
    if hasattr(transport, "max_size"):
        transport.max_size = recv
    # aiohttp pauses the socket past `_high_water` buffered bytes and resumes below
    # `_low_water` (internal attributes, checked with aiohttp 3.14).
    if hasattr(reader, "_high_water") and hasattr(reader, "_low_water"):
        reader._low_water = limit
        reader._high_water = limit * 2


def _bounded(value: int, low: int, high: int) -> int:
    """The largest power of two at most `value`, within [low, high]."""
    power = 1 << max(0, value.bit_length() - 1)
    return max(low, min(high, power))


INTAKE = web.AppKey("intake", Intake)
