"""Registry in Redis: the legacy per-element keys and the Admin Module's published list, plus
the legacy format's writers.

Two formats are read, with one cache and one listener:
- legacy: `storage:{mode}:by_priority` (ZSET, score = priority; one per writable
  mode) lists the elements, `storage:elements:{id}` (HASH of strings, TTL 90 s) describes each;
  a missing hash means the element is gone. tusingest's capacity monitor writes these.
- published (`registry/published.py`): the JSON document the Admin Module keeps
  in `artstore:storage_elements`; its available edit/rw entries with `element_id` and `api_url`.

Merge, per element id: the legacy keys win. An id with a legacy hash is the legacy writer's,
listed or not (a FULL or ro/ar element leaves its ZSET but keeps its hash, and the Admin
Module's view of it must not bring it back); every other published element is added. The
answer is by ascending priority (ties: legacy first, then by id). `element(id)` reads the hash,
else the published entry. Both formats are one chain source, "redis" in the metrics: the chain
takes the first source with any element, so two links would hide one format whenever the other
lists anything, and could not apply the per-id rule above.

Results are cached per mode for a few seconds; any message on `artstore:service_discovery` (the
legacy `announce` and the Admin Module's `storage_element_config_updated` alike) drops the
cache. Every key and the channel take the REDIS_KEY_PREFIX in front.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from tusingest.domain import WRITABLE_MODES, CapacityStatus, ElementInfo, ElementMode, Thresholds
from tusingest.registry import published

log = logging.getLogger(__name__)

CHANNEL = "artstore:service_discovery"
EVENT = "storage_element_config_updated"
ACTIONS = frozenset({"created", "updated", "deleted", "synced", "scheduled", "startup", "manual"})
HEALTHY = "healthy"
_REQUIRED = (
    "id",
    "mode",
    "capacity_total",
    "capacity_used",
    "capacity_free",
    "endpoint",
    "priority",
    "health_status",
    "capacity_status",
)


def priority_key(mode: ElementMode, prefix: str = "") -> str:
    return f"{prefix}storage:{mode.value}:by_priority"


def element_key(element_id: str, prefix: str = "") -> str:
    return f"{prefix}storage:elements:{element_id}"


def channel(prefix: str = "") -> str:
    return f"{prefix}{CHANNEL}"


class RedisRegistry:
    """Implements `Registry` on the legacy per-element keys and the Admin Module's published
    list (merged as the module says), cached `cache_seconds` per mode. `thresholds` (per mode)
    turn a published element's capacity into its status."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        thresholds: Mapping[ElementMode, Thresholds] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._thresholds = dict(thresholds or {})
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[ElementMode, tuple[float, list[ElementInfo]]] = {}
        self._generation = 0  # bumped by invalidate(): a read that straddles it is not cached

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        now = self._clock()
        cached = self._cache.get(mode)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return list(cached[1])
        generation = self._generation
        found = await self._read(mode)
        if generation == self._generation:
            self._cache[mode] = (now, found)
        return list(found)

    async def element(self, element_id: str) -> ElementInfo | None:
        """From the element's hash (FULL and ro/ar elements keep one, outside the ZSETs), else
        from its published entry (any mode; unavailable: unhealthy)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(element_key(element_id, self._prefix))
            pipe.get(published.published_key(self._prefix))
            raw, document = await pipe.execute(raise_on_error=False)
        if isinstance(raw, Exception):
            raise raw
        if not raw:
            return published.find(self._published(document), element_id)
        try:
            info = parse_element({text(k): text(v) for k, v in raw.items()})
        except (KeyError, ValueError) as exc:
            log.warning("registry: malformed storage element %r: %s", element_id, exc)
            return None
        return info if info.element_id == element_id else None

    async def invalidate(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def listen(self, *, retry_seconds: float = 1.0) -> None:
        """Invalidate the cache on every message on the discovery channel (a legacy
        announcement or the Admin Module's `storage_element_config_updated`); run as a task.

        Reconnects after `retry_seconds` on any error; returns only by cancellation.
        """
        name = channel(self._prefix)
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(name)
                # Messages sent while not subscribed are lost: start from a fresh read.
                await self.invalidate()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self.invalidate()
            except Exception as exc:
                log.warning("registry listener on %s: %s; reconnecting", name, exc)
            finally:
                try:
                    await pubsub.aclose()
                except Exception as exc:
                    log.debug("registry listener: closing pubsub: %s", exc)
            await asyncio.sleep(retry_seconds)

    async def _read(self, mode: ElementMode) -> list[ElementInfo]:
        if mode not in WRITABLE_MODES:
            return []  # writers never list ro/ar elements
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrange(priority_key(mode, self._prefix), 0, -1)
            pipe.get(published.published_key(self._prefix))
            listing, document = await pipe.execute(raise_on_error=False)
        if isinstance(listing, Exception):
            raise listing
        members = [text(m) for m in listing]
        candidates = published.listed(self._published(document), mode)
        zset = set(members)
        unlisted = [info.element_id for info in candidates if info.element_id not in zset]
        if not members and not candidates:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hgetall(element_key(member, self._prefix))
            for element_id in unlisted:
                pipe.exists(element_key(element_id, self._prefix))
            replies = await pipe.execute()
        hashes = replies[: len(members)]
        legacy = {m for m, raw in zip(members, hashes, strict=True) if raw}
        legacy.update(i for i, n in zip(unlisted, replies[len(members) :], strict=True) if n)
        found = self._legacy(mode, members, hashes)
        found.extend(info for info in candidates if info.element_id not in legacy)
        found.sort(key=lambda info: info.priority)  # stable: legacy (ZSET order) first on ties
        return found

    def _published(self, document: object) -> list[ElementInfo]:
        """The published elements of a GET reply (an error reply: none, with a warning)."""
        if isinstance(document, Exception):
            log.warning("registry: cannot read %s: %s", published.KEY, document)
            return []
        return published.parse_document(document, self._thresholds)

    def _legacy(
        self, mode: ElementMode, members: list[str], hashes: list[Any]
    ) -> list[ElementInfo]:
        found: list[ElementInfo] = []
        for member, raw in zip(members, hashes, strict=True):
            if not raw:
                continue  # hash expired or deleted: the element is gone
            fields = {text(k): text(v) for k, v in raw.items()}
            try:
                info = parse_element(fields)
                if info.element_id != member:
                    raise ValueError(f"id {info.element_id!r} under member {member!r}")
            except (KeyError, ValueError) as exc:
                log.warning("registry: skipping malformed storage element %r: %s", member, exc)
                continue
            if info.mode is not mode:
                log.debug("registry: %r is %s, listed under %s; skipped", member, info.mode, mode)
                continue
            found.append(info)
        return found


def parse_element(fields: Mapping[str, str]) -> ElementInfo:
    """An `ElementInfo` from the hash's fields; KeyError/ValueError when malformed."""
    missing = [name for name in _REQUIRED if not fields.get(name)]
    if missing:
        raise KeyError(f"missing fields {', '.join(missing)}")
    total = _count(fields, "capacity_total")
    used = _count(fields, "capacity_used")
    free = _count(fields, "capacity_free")
    if "capacity_percent" in fields:
        percent = float(fields["capacity_percent"])
        if not math.isfinite(percent):
            raise ValueError(f"capacity_percent {fields['capacity_percent']!r}")
    if fields.get("last_updated"):
        datetime.fromisoformat(fields["last_updated"].replace("Z", "+00:00"))
    return ElementInfo(
        element_id=fields["id"],
        mode=ElementMode(fields["mode"]),
        priority=int(fields["priority"]),
        endpoint=fields["endpoint"],
        capacity_total=total,
        capacity_used=used,
        capacity_free=free,
        status=CapacityStatus(fields["capacity_status"]),
        healthy=fields["health_status"] == HEALTHY,
    )


def element_fields(info: ElementInfo, now: datetime | None = None) -> dict[str, str]:
    """The hash's fields for `info`, all strings."""
    percent = info.capacity_used / info.capacity_total * 100 if info.capacity_total > 0 else 0.0
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "id": info.element_id,
        "mode": info.mode.value,
        "capacity_total": str(info.capacity_total),
        "capacity_used": str(info.capacity_used),
        "capacity_free": str(info.capacity_free),
        "capacity_percent": f"{percent:.2f}",
        "endpoint": info.endpoint,
        "priority": str(info.priority),
        "last_updated": when.isoformat(),
        "health_status": HEALTHY if info.healthy else "unhealthy",
        "capacity_status": info.status.value,
    }


def is_listed(info: ElementInfo) -> bool:
    """Writer rule: an element is in its mode's ZSET unless FULL or in ro/ar."""
    return info.mode in WRITABLE_MODES and info.status is not CapacityStatus.FULL


async def publish(
    client: aioredis.Redis, info: ElementInfo, *, prefix: str = "", ttl_seconds: int = 90
) -> None:
    """Write the element's hash (with TTL) and keep the ZSETs per the writer rules."""
    key = element_key(info.element_id, prefix)
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)  # drop fields of an earlier writer that this one does not set
        pipe.hset(key, mapping=element_fields(info))  # type: ignore[arg-type]
        pipe.expire(key, ttl_seconds)
        for mode in WRITABLE_MODES:
            if mode is info.mode and is_listed(info):
                pipe.zadd(priority_key(mode, prefix), {info.element_id: info.priority})
            else:
                pipe.zrem(priority_key(mode, prefix), info.element_id)
        await pipe.execute()


async def withdraw(client: aioredis.Redis, element_id: str, *, prefix: str = "") -> None:
    """Remove the element from both ZSETs and delete its hash (e.g. on shutdown)."""
    async with client.pipeline(transaction=True) as pipe:
        for mode in WRITABLE_MODES:
            pipe.zrem(priority_key(mode, prefix), element_id)
        pipe.delete(element_key(element_id, prefix))
        await pipe.execute()


async def announce(client: aioredis.Redis, action: str, *, prefix: str = "") -> int:
    """Tell every registry that the elements changed; returns the number of receivers."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
    message = {
        "event": EVENT,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "action": action,
    }
    receivers: Any = await client.publish(channel(prefix), json.dumps(message))
    return int(receivers)


def text(value: object) -> str:
    """A Redis reply value (bytes or str) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _count(fields: Mapping[str, str], name: str) -> int:
    value = int(fields[name])
    if value < 0:
        raise ValueError(f"{name} {value} < 0")
    return value
