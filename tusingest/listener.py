"""The listening socket under load: the open-file limit raised to what the system allows, and
a cap on open connections past which a new one gets a short 503 at once, before the process
runs out of descriptors and can answer nobody."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Callable, Mapping

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tusingest import refusals

log = logging.getLogger(__name__)

# Descriptors kept for everything but client connections: the database pool, staging files
# being written, clamd and storage-element connections, the logs. The cap is checked as
# connections are accepted, but asyncio accepts up to `backlog` (128) of them in one go before
# any registers, and the refused ones close a moment later: room for two such bursts, plus the
# answered refusals.
_ACCEPT_BURST = 128
RESERVED_DESCRIPTORS = 256 + 64 + 2 * _ACCEPT_BURST
_BUSY_TEXT = b"server_busy: too many open connections, retry soon\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


_BUSY_LINGER = 0.1  # seconds a refused connection's request may take to arrive (then dropped)
# Refused connections answered at once; past them a flood is reset without an answer, so that
# the refusals themselves never use up the descriptors.
_MAX_ANSWERED_REFUSALS = 64


def raise_open_files_limit() -> int:
    """Lift the soft open-file limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """The connections to serve at once: `configured` (0: as many as the descriptors allow),
    never more than the descriptors left after the reserve."""
    available = max(16, open_files - RESERVED_DESCRIPTORS)
    return min(configured, available) if configured > 0 else available


class _Busy(asyncio.Protocol):
    """A connection over the cap: told so at once, its request read and dropped, then closed
    (closing with its request unread would reset the connection and lose the answer)."""

    _transport: asyncio.Transport
    _timer: asyncio.TimerHandle

    def __init__(self, live: set[_Busy]) -> None:
        self._live = live
        live.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(_BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_BUSY_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        """The request: not served."""

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self._live.discard(self)


class _Reset(asyncio.Protocol):
    """A connection in a flood past the cap: dropped at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class CappedSite(web.SockSite):
    """A `SockSite` serving at most `max_connections` connections; the next ones get a 503.
    Requests the HTTP parser refuses are answered as JSON with `refusal_headers` (`refusals`)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        max_connections: int,
        on_connection: Callable[[asyncio.Transport], None] | None = None,
        refusal_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(runner, sock)
        self._handler_class = refusals.handler_class(refusal_headers or {})
        self._max_connections = max_connections
        self._on_connection = on_connection
        self._refusing: set[_Busy] = set()

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        handlers = server
        if self._on_connection is not None:
            _observe_connections(server, self._on_connection)

        def factory() -> asyncio.Protocol:
            if len(handlers.connections) < self._max_connections:
                return refusals.adopt(handlers(), self._handler_class)
            if len(self._refusing) < _MAX_ANSWERED_REFUSALS:
                return _Busy(self._refusing)
            return _Reset()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, sock=self._sock, backlog=_ACCEPT_BURST)


def _observe_connections(server: web.Server, observe: Callable[[asyncio.Transport], None]) -> None:
    """Call `observe` with each new connection's transport as it registers, before its first
    read (aiohttp's handler registers with its server from `connection_made`)."""
    register = server.connection_made

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        register(handler, transport)
        observe(transport)

    server.connection_made = connection_made  # type: ignore[method-assign]
