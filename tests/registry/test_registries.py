"""Registries: one contract suite for the memory and Redis adapters, then Redis specifics
(cache TTL, pub/sub invalidation, expired and malformed hashes, the raw key layout)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis

from tests.samples import element
from tusingest.domain import CapacityStatus, ElementInfo, ElementMode
from tusingest.ports import Registry
from tusingest.registry.memory import MemoryRegistry
from tusingest.registry.redis import (
    CHANNEL,
    RedisRegistry,
    announce,
    element_fields,
    publish,
    withdraw,
)

TEST_DB = 15  # a dedicated DB index on a possibly shared server; keys also carry a prefix
FIELDS = {
    "id",
    "mode",
    "capacity_total",
    "capacity_used",
    "capacity_free",
    "capacity_percent",
    "endpoint",
    "priority",
    "last_updated",
    "health_status",
    "capacity_status",
}


async def scored(raw: Any, key: str) -> list[tuple[str, float]]:
    return [(member, score) for member, score in await raw.zrange(key, 0, -1, withscores=True)]


def ids(infos: list[ElementInfo]) -> list[str]:
    return [info.element_id for info in infos]


class Clock:
    """An injectable monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Session:
    """One test's registry plus how to change its source (inside the test's event loop)."""

    registry: Registry
    put: Callable[[ElementInfo], Awaitable[None]]
    remove: Callable[[str], Awaitable[None]]
    client: Any = None  # redis only: the (bytes) client the registry and writers use
    raw: Any = None  # redis only: a decode_responses client for assertions
    prefix: str = ""


Body = Callable[[Session], Awaitable[None]]


class MemoryBackend:
    name = "memory"

    def run(self, body: Body) -> None:
        async def main() -> None:
            registry = MemoryRegistry()

            async def put(info: ElementInfo) -> None:
                registry.put(info)

            async def remove(element_id: str) -> None:
                registry.remove(element_id)

            await body(Session(registry, put, remove))

        asyncio.run(asyncio.wait_for(main(), 30))


@dataclass
class RedisBackend:
    url: str
    prefix: str
    name: str = "redis"
    registry_kwargs: dict[str, Any] = field(default_factory=dict)

    def run(self, body: Body, **registry_kwargs: Any) -> None:
        async def main() -> None:
            client = aioredis.from_url(self.url)
            raw = aioredis.from_url(self.url, decode_responses=True)
            try:
                registry = RedisRegistry(client, prefix=self.prefix, **registry_kwargs)

                async def put(info: ElementInfo) -> None:
                    await publish(client, info, prefix=self.prefix)

                async def remove(element_id: str) -> None:
                    await withdraw(client, element_id, prefix=self.prefix)

                await body(Session(registry, put, remove, client, raw, self.prefix))
            finally:
                await client.aclose()
                await raw.aclose()

        asyncio.run(asyncio.wait_for(main(), 30))


def redis_test_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail('REDIS_URL is not set: run eval "$(scripts/services start redis)" first')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{TEST_DB}"))


@pytest.fixture
def redis_backend() -> Iterator[RedisBackend]:
    url = redis_test_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        pytest.fail(f"Redis is required for the tests and not reachable at {url}: {exc}")
    prefix = f"tusingest-test:{uuid.uuid4().hex}:"
    try:
        yield RedisBackend(url, prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> MemoryBackend | RedisBackend:
    if request.param == "memory":
        return MemoryBackend()
    backend: RedisBackend = request.getfixturevalue("redis_backend")
    return backend


# ---- contract suite (both adapters) ----------------------------------------------------


def test_elements_by_ascending_priority(backend: MemoryBackend | RedisBackend) -> None:
    async def body(s: Session) -> None:
        for info in (element("se-c", 30), element("se-a", 10), element("se-b", 20)):
            await s.put(info)
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-a", "se-b", "se-c"]

    backend.run(body)


def test_empty_registry(backend: MemoryBackend | RedisBackend) -> None:
    async def body(s: Session) -> None:
        assert await s.registry.elements(ElementMode.RW) == []
        assert await s.registry.elements(ElementMode.EDIT) == []

    backend.run(body)


def test_modes_are_separate(backend: MemoryBackend | RedisBackend) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-edit", 5, ElementMode.EDIT))
        await s.put(element("se-rw1", 1, ElementMode.RW))
        await s.put(element("se-rw2", 2, ElementMode.RW))
        assert ids(await s.registry.elements(ElementMode.EDIT)) == ["se-edit"]
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-rw1", "se-rw2"]

    backend.run(body)


def test_fields_round_trip(backend: MemoryBackend | RedisBackend) -> None:
    async def body(s: Session) -> None:
        sick = element("se-sick", 3, status=CapacityStatus.CRITICAL, healthy=False)
        warn = element("se-warn", 4, ElementMode.EDIT, status=CapacityStatus.WARNING)
        await s.put(sick)
        await s.put(warn)
        assert await s.registry.elements(ElementMode.RW) == [sick]
        assert await s.registry.elements(ElementMode.EDIT) == [warn]

    backend.run(body)


def test_removal(backend: MemoryBackend | RedisBackend) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-1", 1))
        await s.put(element("se-2", 2))
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-1", "se-2"]
        await s.remove("se-1")
        await s.remove("se-absent")  # not an error
        await s.registry.invalidate()
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-2"]

    backend.run(body)


def test_update_replaces_and_moves_between_modes(backend: MemoryBackend | RedisBackend) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-1", 1))
        await s.put(element("se-2", 2))
        await s.put(element("se-1", 3))
        await s.registry.invalidate()
        assert [(i.element_id, i.priority) for i in await s.registry.elements(ElementMode.RW)] == [
            ("se-2", 2),
            ("se-1", 3),
        ]
        await s.put(element("se-2", 2, ElementMode.EDIT))
        await s.registry.invalidate()
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-1"]
        assert ids(await s.registry.elements(ElementMode.EDIT)) == ["se-2"]

    backend.run(body)


# ---- Redis specifics -------------------------------------------------------------------


def test_redis_full_and_readonly_are_not_listed(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-ok", 1))
        await s.put(element("se-full", 2, status=CapacityStatus.FULL))
        await s.put(element("se-ro", 3, ElementMode.RO))
        await s.put(element("se-ar", 4, ElementMode.AR))
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-ok"]
        assert await s.registry.elements(ElementMode.RO) == []
        assert await s.registry.elements(ElementMode.AR) == []
        # The hashes are still written (the capacity monitor keeps refreshing them) ...
        assert await s.raw.exists(f"{s.prefix}storage:elements:se-full") == 1
        # ... and an element that becomes FULL or read-only leaves its ZSET.
        await s.put(element("se-ok", 1, status=CapacityStatus.FULL))
        await s.put(element("se-edit", 1, ElementMode.EDIT))
        await s.put(element("se-edit", 1, ElementMode.RO))
        await s.registry.invalidate()
        assert await s.registry.elements(ElementMode.RW) == []
        assert await s.registry.elements(ElementMode.EDIT) == []
        for mode in ("rw", "edit"):
            assert await s.raw.zrange(f"{s.prefix}storage:{mode}:by_priority", 0, -1) == []
        # Back to OK: listed again.
        await s.put(element("se-ok", 1))
        await s.registry.invalidate()
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-ok"]
        # By id, a FULL or read-only element is still known (deleting from it needs it).
        full = await s.registry.element("se-full")
        assert full is not None
        assert full.status is CapacityStatus.FULL
        read_only = await s.registry.element("se-edit")
        assert read_only is not None
        assert read_only.mode is ElementMode.RO
        assert await s.registry.element("se-none") is None

    redis_backend.run(body)


def test_redis_cache_ttl(redis_backend: RedisBackend) -> None:
    clock = Clock()

    async def body(s: Session) -> None:
        await s.put(element("se-a", 1))
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-a"]
        await s.put(element("se-b", 2))
        clock.now += 4.9
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-a"]  # cached
        clock.now += 0.2
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-a", "se-b"]  # expired
        await s.put(element("se-c", 3))
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-a", "se-b"]  # cached
        await s.registry.invalidate()
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-a", "se-b", "se-c"]

    redis_backend.run(body, clock=clock, cache_seconds=5.0)


def test_redis_cache_is_per_mode(redis_backend: RedisBackend) -> None:
    clock = Clock()

    async def body(s: Session) -> None:
        await s.put(element("se-rw", 1))
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-rw"]
        await s.put(element("se-edit", 1, ElementMode.EDIT))
        assert ids(await s.registry.elements(ElementMode.EDIT)) == ["se-edit"]  # not cached yet

    redis_backend.run(body, clock=clock)


def test_redis_listen_invalidates_on_announce(redis_backend: RedisBackend) -> None:
    clock = Clock()  # never advances: only invalidation can reveal a change

    async def body(s: Session) -> None:
        registry = s.registry
        assert isinstance(registry, RedisRegistry)
        task = asyncio.create_task(registry.listen(retry_seconds=0.1))
        try:
            name = f"{s.prefix}{CHANNEL}"
            for _ in range(100):
                if dict(await s.raw.pubsub_numsub(name)).get(name, 0) >= 1:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("listen() did not subscribe within 2 s")
            await asyncio.sleep(0.1)  # let it finish its post-subscribe invalidation
            await s.put(element("se-a", 1))
            assert ids(await registry.elements(ElementMode.RW)) == ["se-a"]
            await s.put(element("se-b", 2))
            await asyncio.sleep(0.2)
            assert ids(await registry.elements(ElementMode.RW)) == ["se-a"]  # still cached
            assert await announce(s.client, "updated", prefix=s.prefix) == 1
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            while ids(await registry.elements(ElementMode.RW)) != ["se-a", "se-b"]:
                assert loop.time() < deadline, "the announcement did not invalidate within 1 s"
                await asyncio.sleep(0.02)
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    redis_backend.run(body, clock=clock)


def test_redis_listen_survives_unreachable_server(
    redis_backend: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        # Port 1 on localhost: connection refused at once.
        client = aioredis.from_url("redis://127.0.0.1:1/15", socket_connect_timeout=0.5)
        try:
            task = asyncio.create_task(RedisRegistry(client).listen(retry_seconds=0.05))
            await asyncio.sleep(0.4)
            assert not task.done()  # it keeps retrying
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="tusingest.registry.redis"):
        asyncio.run(main())
    assert sum("reconnecting" in r.getMessage() for r in caplog.records) >= 2


def test_redis_announce_message(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        pubsub = s.raw.pubsub()
        try:
            await pubsub.subscribe(f"{s.prefix}{CHANNEL}")
            await announce(s.client, "manual", prefix=s.prefix)
            message = None
            for _ in range(20):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    break
            assert message is not None
            payload = json.loads(message["data"])
            assert payload["event"] == "storage_element_config_updated"
            assert payload["action"] == "manual"
            assert payload["timestamp"].endswith("Z")
            datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        finally:
            await pubsub.aclose()
        with pytest.raises(ValueError, match="unknown action"):
            await announce(s.client, "exploded", prefix=s.prefix)

    redis_backend.run(body)


def test_redis_missing_or_expired_hash_is_skipped(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        for info in (element("se-1", 1), element("se-2", 2), element("se-3", 3)):
            await s.put(info)
        await s.raw.delete(f"{s.prefix}storage:elements:se-1")  # gone
        await s.raw.pexpire(f"{s.prefix}storage:elements:se-3", 50)  # about to expire
        await asyncio.sleep(0.2)
        assert ids(await s.registry.elements(ElementMode.RW)) == ["se-2"]
        # The members are still in the ZSET: the reader only skips them.
        assert await s.raw.zcard(f"{s.prefix}storage:rw:by_priority") == 3

    redis_backend.run(body)


MALFORMED: dict[str, dict[str, str | None]] = {
    "non-integer total": {"capacity_total": "lots"},
    "negative free": {"capacity_free": "-1"},
    "non-integer priority": {"priority": "1.5"},
    "unknown mode": {"mode": "rwx"},
    "unknown capacity status": {"capacity_status": "nearly"},
    "missing endpoint": {"endpoint": None},
    "empty health": {"health_status": ""},
    "missing id": {"id": None},
    "id of another element": {"id": "se-other"},
    "bad percent": {"capacity_percent": "n/a"},
    "bad last_updated": {"last_updated": "yesterday"},
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_redis_malformed_hash_is_skipped(
    redis_backend: RedisBackend,
    change: dict[str, str | None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-good", 1))
        fields = dict(element_fields(element("se-bad", 2)))
        for name, value in change.items():
            if value is None:
                fields.pop(name)
            else:
                fields[name] = value
        key = f"{s.prefix}storage:elements:se-bad"
        await s.raw.hset(key, mapping=fields)
        await s.raw.expire(key, 90)
        await s.raw.zadd(f"{s.prefix}storage:rw:by_priority", {"se-bad": 2})
        with caplog.at_level(logging.WARNING, logger="tusingest.registry.redis"):
            assert ids(await s.registry.elements(ElementMode.RW)) == ["se-good"]
        assert any("se-bad" in r.getMessage() for r in caplog.records)

    redis_backend.run(body)


def test_redis_health_status_other_than_healthy_is_unhealthy(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-1", 1))
        await s.raw.hset(f"{s.prefix}storage:elements:se-1", "health_status", "degraded")
        [info] = await s.registry.elements(ElementMode.RW)
        assert info.healthy is False
        await s.raw.hset(f"{s.prefix}storage:elements:se-1", "health_status", "healthy")
        await s.registry.invalidate()
        [info] = await s.registry.elements(ElementMode.RW)
        assert info.healthy is True

    redis_backend.run(body)


def test_redis_raw_key_layout(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        before = datetime.now(UTC)
        await publish(s.client, element("se-1", 10), prefix=s.prefix, ttl_seconds=90)
        await publish(
            s.client, element("se-2", 7, ElementMode.EDIT, healthy=False), prefix=s.prefix
        )
        p = s.prefix
        keys = sorted([k async for k in s.raw.scan_iter(match=f"{p}*")])
        assert keys == sorted(
            [
                f"{p}storage:elements:se-1",
                f"{p}storage:elements:se-2",
                f"{p}storage:rw:by_priority",
                f"{p}storage:edit:by_priority",
            ]
        )
        fields = await s.raw.hgetall(f"{p}storage:elements:se-1")
        assert set(fields) == FIELDS
        when = datetime.fromisoformat(fields.pop("last_updated"))
        assert when.utcoffset() is not None
        assert when.utcoffset().total_seconds() == 0
        assert before <= when <= datetime.now(UTC)
        assert fields == {
            "id": "se-1",
            "mode": "rw",
            "capacity_total": "1000",
            "capacity_used": "250",
            "capacity_free": "750",
            "capacity_percent": "25.00",
            "endpoint": "http://se-1.example:8010",
            "priority": "10",
            "health_status": "healthy",
            "capacity_status": "ok",
        }
        edit = await s.raw.hgetall(f"{p}storage:elements:se-2")
        assert edit["mode"] == "edit"
        assert edit["health_status"] != "healthy"
        assert 0 < await s.raw.ttl(f"{p}storage:elements:se-1") <= 90
        assert await scored(s.raw, f"{p}storage:rw:by_priority") == [("se-1", 10.0)]
        assert await scored(s.raw, f"{p}storage:edit:by_priority") == [("se-2", 7.0)]
        await withdraw(s.client, "se-1", prefix=p)
        await withdraw(s.client, "se-2", prefix=p)
        assert [k async for k in s.raw.scan_iter(match=f"{p}*")] == []

    redis_backend.run(body)


def test_redis_reads_decoded_clients_too(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        await s.put(element("se-1", 1))
        registry = RedisRegistry(s.raw, prefix=s.prefix)
        assert await registry.elements(ElementMode.RW) == [element("se-1", 1)]

    redis_backend.run(body)


def test_redis_capacity_percent_of_empty_element(redis_backend: RedisBackend) -> None:
    async def body(s: Session) -> None:
        info = replace(element("se-0", 1), capacity_total=0, capacity_used=0, capacity_free=0)
        await s.put(info)
        assert await s.raw.hget(f"{s.prefix}storage:elements:se-0", "capacity_percent") == "0.00"
        assert await s.registry.elements(ElementMode.RW) == [info]

    redis_backend.run(body)
