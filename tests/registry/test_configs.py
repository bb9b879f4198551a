"""Configured storage elements in Redis: CRUD, ordering, validation and the raw key layout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from tests.rediskeys import redis_url
from tusingest.domain import ElementMode
from tusingest.registry.configs import (
    ElementConfig,
    InvalidElementConfig,
    RedisElementConfigs,
    configs_key,
)

Body = Callable[[aioredis.Redis, RedisElementConfigs], Awaitable[None]]


def run(prefix: str, body: Body) -> None:
    async def main() -> None:
        client = aioredis.from_url(redis_url(), decode_responses=True)
        try:
            await body(client, RedisElementConfigs(client, prefix))
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(main(), 30))


def cfg(element_id: str, mode: ElementMode = ElementMode.RW, priority: int = 100) -> ElementConfig:
    return ElementConfig(element_id, mode, f"http://{element_id}.example:8010", priority)


def test_put_get_all_remove(prefix: str) -> None:
    async def body(_client: aioredis.Redis, configs: RedisElementConfigs) -> None:
        assert await configs.all() == []
        assert await configs.get("se-1") is None
        one = cfg("se-1")
        await configs.put(one)
        assert await configs.get("se-1") == one
        assert await configs.all() == [one]
        assert await configs.remove("se-1") is True
        assert await configs.remove("se-1") is False
        assert await configs.get("se-1") is None
        assert await configs.all() == []

    run(prefix, body)


def test_put_replaces(prefix: str) -> None:
    async def body(_client: aioredis.Redis, configs: RedisElementConfigs) -> None:
        await configs.put(cfg("se-1", ElementMode.RW, 10))
        moved = ElementConfig("se-1", ElementMode.EDIT, "https://se-1.example/api/v1", 3)
        await configs.put(moved)
        assert await configs.all() == [moved]

    run(prefix, body)


def test_all_is_sorted_by_mode_priority_id(prefix: str) -> None:
    async def body(_client: aioredis.Redis, configs: RedisElementConfigs) -> None:
        for config in (
            cfg("se-r2", ElementMode.RW, 5),
            cfg("se-a", ElementMode.AR, 1),
            cfg("se-r1", ElementMode.RW, 5),
            cfg("se-e", ElementMode.EDIT, 50),
            cfg("se-r0", ElementMode.RW, 1),
        ):
            await configs.put(config)
        assert [c.element_id for c in await configs.all()] == [
            "se-e",
            "se-r0",
            "se-r1",
            "se-r2",
            "se-a",
        ]

    run(prefix, body)


def test_stored_as_one_durable_hash_of_json(prefix: str) -> None:
    async def body(client: aioredis.Redis, configs: RedisElementConfigs) -> None:
        await configs.put(cfg("se-1", ElementMode.EDIT, 7))
        key = f"{prefix}tusingest:storage_elements"
        assert configs_key(prefix) == key
        assert await client.type(key) == "hash"
        assert await client.ttl(key) == -1  # no expiry: FULL or silent elements stay configured
        raw = await client.hget(key, "se-1")
        assert raw is not None
        stored = json.loads(raw)
        assert stored == {
            "element_id": "se-1",
            "mode": "edit",
            "endpoint": "http://se-1.example:8010",
            "priority": 7,
        }
        # Nothing under the legacy `storage:` keys or ArtStore's `capacity:`/`health:` keys.
        assert sorted(await client.keys(f"{prefix}*")) == [key]

    run(prefix, body)


def test_malformed_entries_are_skipped_by_all(prefix: str) -> None:
    async def body(client: aioredis.Redis, configs: RedisElementConfigs) -> None:
        good = cfg("se-good")
        await configs.put(good)
        key = configs_key(prefix)
        await client.hset(key, "se-junk", "{not json")
        await client.hset(key, "se-other", cfg("se-elsewhere").to_json())
        bad_mode = '{"element_id": "se-mode", "mode": "xx", "endpoint": "http://a", "priority": 1}'
        await client.hset(key, "se-mode", bad_mode)
        assert await configs.all() == [good]
        with pytest.raises(InvalidElementConfig):
            await configs.get("se-junk")
        assert await configs.remove("se-junk") is True  # still removable

    run(prefix, body)


@pytest.mark.parametrize(
    ("element_id", "endpoint", "priority"),
    [
        ("", "http://se:8010", 1),
        ("se 1", "http://se:8010", 1),
        ("se:1", "http://se:8010", 1),
        ("-se", "http://se:8010", 1),
        ("x" * 256, "http://se:8010", 1),
        ("se-1", "ftp://se:8010", 1),
        ("se-1", "se:8010", 1),
        ("se-1", "http://", 1),
        ("se-1", "http://se:notaport", 1),
        ("se-1", "http://user:secret@se:8010", 1),
        ("se-1", "http://se:8010/?q=1", 1),
        ("se-1", "http://se:8010", -1),
    ],
)
def test_invalid_configs_are_refused(element_id: str, endpoint: str, priority: int) -> None:
    with pytest.raises(InvalidElementConfig) as caught:
        ElementConfig(element_id, ElementMode.RW, endpoint, priority)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_element_config"


def test_valid_configs_round_trip_through_json() -> None:
    for config in (
        ElementConfig("se-01", ElementMode.EDIT, "http://127.0.0.1:8010", 0),
        ElementConfig("SE_2.b", ElementMode.AR, "https://se.example/api/v1", 999),
    ):
        assert ElementConfig.from_json(config.to_json()) == config
