"""Storage-element clients by registry entry (`file://` local disk, `http(s)://` SE), each
with its circuit breaker; the URL scheme of the endpoint picks the adapter."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from tusingest.domain import ElementInfo, ElementMode
from tusingest.elements.breaker import Breakers, CircuitBreaker
from tusingest.elements.http import HttpElement
from tusingest.elements.local import LocalElement
from tusingest.ports import StorageElement, TokenSource
from tusingest.settings.storage import BreakerSettings


class ElementDirectory:
    """Implements `Elements`: one client per (element id, endpoint, mode), reused; a moved
    element gets a new client, a removed one loses its clients and its breaker."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        token: TokenSource | None,
        breakers: BreakerSettings,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        slow_answer: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._token = token
        self._breakers = Breakers(breakers, clock)
        self._timeout = timeout
        self._max_retries = max_retries
        self._slow_answer = slow_answer  # seconds after which an SE's answer proves nothing
        self._clients: dict[tuple[str, str, ElementMode], StorageElement] = {}

    def element(self, info: ElementInfo) -> StorageElement:
        key = (info.element_id, info.endpoint, info.mode)
        client = self._clients.get(key)
        if client is None:
            for stale in [k for k in self._clients if k[0] == info.element_id and k[1] != key[1]]:
                del self._clients[stale]  # the element moved: its old address is of no use
            client = self._clients[key] = self._build(info)
        return client

    def breaker(self, element_id: str) -> CircuitBreaker:
        return self._breakers.get(element_id)

    def open_ids(self) -> set[str]:
        return self._breakers.open_ids()

    def forget(self, element_id: str) -> None:
        for key in [key for key in self._clients if key[0] == element_id]:
            del self._clients[key]
        self._breakers.forget(element_id)

    def states(self) -> dict[str, str]:
        return self._breakers.states()

    def _build(self, info: ElementInfo) -> StorageElement:
        parts = urlsplit(info.endpoint)
        if parts.scheme == "file":
            return LocalElement(Path(unquote(parts.path)), info.element_id)
        if parts.scheme in ("http", "https"):
            if self._session is None or self._token is None:
                raise ValueError(f"{info.element_id}: HTTP storage elements need a token source")
            return HttpElement(
                info.element_id,
                info.endpoint,
                info.mode,
                self._session,
                self._token,
                timeout=self._timeout,
                max_retries=self._max_retries,
                slow_answer=self._slow_answer,
            )
        raise ValueError(f"{info.element_id}: unsupported endpoint {info.endpoint!r}")
