"""The configured storage elements (what the capacity monitor polls), kept in one Redis hash.

The legacy registry keys cannot serve as that list: `storage:elements:{id}` expires after 90 s
and a FULL element leaves `storage:{mode}:by_priority`, so an element that is full, or whose
monitor stopped for a while, would be forgotten exactly when it matters that it is polled
again. This hash is durable (no TTL) and written only by operators (`tusingest elements`).
Its key `{prefix}tusingest:storage_elements` is ours: no ArtStore component uses that name
(they avoid the keys the Admin Module and the storage elements write).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from tusingest.domain import ElementMode
from tusingest.errors import TusingestError
from tusingest.registry.redis import text

log = logging.getLogger(__name__)

# Ids end up in Redis keys and in the Admin Module's `storage_element_id` (1–255 chars).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_MODE_ORDER = {mode: index for index, mode in enumerate(ElementMode)}


class InvalidElementConfig(TusingestError):
    """A storage-element configuration that cannot be used (bad id, endpoint or priority)."""

    status = 400
    code = "invalid_element_config"


def configs_key(prefix: str = "") -> str:
    return f"{prefix}tusingest:storage_elements"


@dataclass(frozen=True)
class ElementConfig:
    """One storage element as the operator configured it; validated on construction."""

    element_id: str
    mode: ElementMode
    endpoint: str  # http(s) base URL of the SE, with or without the trailing /api/v1
    priority: int  # lower fills first

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.element_id):
            raise InvalidElementConfig(
                f"element id {self.element_id!r}: use 1–255 letters, digits, '.', '_' or '-'"
            )
        if not isinstance(self.mode, ElementMode):
            raise InvalidElementConfig(f"mode {self.mode!r} is not one of edit, rw, ro, ar")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise InvalidElementConfig(f"priority {self.priority!r} is not an integer")
        if self.priority < 0:
            raise InvalidElementConfig(f"priority {self.priority} must be >= 0")
        check_endpoint(self.endpoint)

    def to_json(self) -> str:
        return json.dumps(
            {
                "element_id": self.element_id,
                "mode": self.mode.value,
                "endpoint": self.endpoint,
                "priority": self.priority,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ElementConfig:
        """Parse a stored value; InvalidElementConfig when it is not one."""
        try:
            data: Any = json.loads(raw)
            return cls(
                element_id=str(data["element_id"]),
                mode=ElementMode(data["mode"]),
                endpoint=str(data["endpoint"]),
                priority=data["priority"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidElementConfig(f"malformed storage-element config: {exc}") from None


def check_endpoint(endpoint: str) -> str:
    """`endpoint` if it is an absolute http(s) URL with a host and nothing after the path."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError as exc:
        raise InvalidElementConfig(f"endpoint {endpoint!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidElementConfig(f"endpoint {endpoint!r} is not an http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidElementConfig(
            f"endpoint {endpoint!r}: no credentials, query or fragment allowed"
        )
    return endpoint


class RedisElementConfigs:
    """The configured elements in the hash `{prefix}tusingest:storage_elements` (no TTL)."""

    def __init__(self, client: aioredis.Redis, prefix: str = "") -> None:
        self._client = client
        self._key = configs_key(prefix)

    async def all(self) -> list[ElementConfig]:
        """Every valid configuration, by mode, then priority, then id; malformed ones are
        logged and skipped so one bad entry does not stop the others from being polled."""
        raw: dict[Any, Any] = await self._client.hgetall(self._key)
        found: list[ElementConfig] = []
        for field, value in raw.items():
            try:
                found.append(_parse(field, value))
            except InvalidElementConfig as exc:
                log.warning("storage element %r: %s; skipped", text(field), exc.message)
        found.sort(key=lambda c: (_MODE_ORDER[c.mode], c.priority, c.element_id))
        return found

    async def get(self, element_id: str) -> ElementConfig | None:
        value: Any = await self._client.hget(self._key, element_id)
        return None if value is None else _parse(element_id, value)

    async def put(self, config: ElementConfig) -> None:
        """Add or replace the configuration of `config.element_id`."""
        await self._client.hset(self._key, config.element_id, config.to_json())

    async def remove(self, element_id: str) -> bool:
        """Forget the element; False when it was not configured."""
        removed: Any = await self._client.hdel(self._key, element_id)
        return int(removed) > 0


def _parse(field: object, value: str | bytes) -> ElementConfig:
    config = ElementConfig.from_json(value)
    if config.element_id != text(field):
        raise InvalidElementConfig(f"holds id {config.element_id!r}")
    return config
