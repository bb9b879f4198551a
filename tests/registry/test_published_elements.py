"""The Redis registry reads the Admin Module's `artstore:storage_elements` next to
the legacy keys: which entries it uses, capacity and status, the per-id merge with the legacy
keys, the Admin Module's events on `artstore:service_discovery`, the key prefix, malformed
documents, and the wiring in `services.open_storage`. Real Redis, one key prefix per test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.rediskeys import redis_url
from tests.samples import element
from tusingest.domain import CapacityStatus, ElementInfo, ElementMode
from tusingest.pipeline.placement import choose
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.redis import RedisRegistry, publish
from tusingest.services import open_storage
from tusingest.settings.app import Settings

EDIT, RW = ElementMode.EDIT, ElementMode.RW


def entry(element_id: str | None, /, **fields: Any) -> dict[str, Any]:
    """One element as the Admin Module writes it, `fields` overriding."""
    mode = fields.get("mode", "edit")
    available = fields.pop("is_available", True)
    return {
        "id": 1,
        "name": f"{element_id} storage",
        "api_url": f"http://{element_id}.example:8010",
        "mode": mode,
        "storage_type": "local",
        "status": "online" if available else "offline",
        "base_path": "/data",
        "capacity_bytes": 1000,
        "used_bytes": 100,
        "file_count": 3,
        "retention_days": 30,
        "priority": 100,
        "element_id": element_id,
        "is_writable": available and mode in ("edit", "rw"),
        "is_available": available,
        "last_health_check": "2025-01-02T15:30:45.123456+00:00",
        **fields,
    }


def document(*entries: dict[str, Any], version: int = 7) -> str:
    return json.dumps(
        {
            "version": version,
            "timestamp": "2025-01-02T15:30:45.123456Z",
            "count": len(entries),
            "storage_elements": list(entries),
        }
    )


def event(action: str, version: int, count: int) -> str:
    """The Admin Module's message on `artstore:service_discovery`."""
    return json.dumps(
        {
            "event": "storage_element_config_updated",
            "timestamp": "2025-01-02T15:31:00.000000Z",
            "action": action,
            "version": version,
            "count": count,
        }
    )


def ids(infos: list[ElementInfo]) -> list[str]:
    return [info.element_id for info in infos]


class Clock:
    """A monotonic clock that never moves: only an invalidation can reveal a change."""

    def __call__(self) -> float:
        return 1000.0


@dataclasses.dataclass
class Redis:
    client: aioredis.Redis  # bytes, as the ingester's
    raw: aioredis.Redis  # decode_responses, for writing and asserting
    prefix: str

    @property
    def key(self) -> str:
        return f"{self.prefix}artstore:storage_elements"

    async def put(self, *entries: dict[str, Any], version: int = 7) -> None:
        """What the Admin Module does on every change: the whole list, TTL 3600 s."""
        await self.raw.set(self.key, document(*entries, version=version), ex=3600)

    def registry(self, **kwargs: Any) -> RedisRegistry:
        return RedisRegistry(self.client, prefix=self.prefix, **kwargs)


def run(prefix: str, body: Callable[[Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.from_url(redis_url())
        raw = aioredis.from_url(redis_url(), decode_responses=True)
        try:
            await body(Redis(client, raw, prefix))
        finally:
            await client.aclose()
            await raw.aclose()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_registry_finds_elements_published_in_artstore_storage_elements(prefix: str) -> None:
    async def body(r: Redis) -> None:
        await r.put(
            entry("se-b", priority=20, capacity_bytes=5000, used_bytes=1000),
            entry("se-a", priority=10, capacity_bytes=2000, used_bytes=0),
            entry("se-rw", mode="rw", priority=1, api_url="https://rw.example/", used_bytes=250),
        )
        registry = r.registry()
        se_a = ElementInfo("se-a", EDIT, 10, "http://se-a.example:8010", 2000, 0, 2000,
                           CapacityStatus.OK, True)  # fmt: skip
        se_b = ElementInfo("se-b", EDIT, 20, "http://se-b.example:8010", 5000, 1000, 4000,
                           CapacityStatus.OK, True)  # fmt: skip
        se_rw = ElementInfo("se-rw", RW, 1, "https://rw.example/", 1000, 250, 750,
                            CapacityStatus.OK, True)  # fmt: skip
        assert await registry.elements(EDIT) == [se_a, se_b]
        assert await registry.elements(RW) == [se_rw]
        assert await registry.elements(ElementMode.RO) == []
        assert await registry.element("se-b") == se_b
        assert await registry.element("se-none") is None
        # As the chain's Redis source: the source the metrics name is "redis".
        chain = ChainRegistry([("redis", registry)])
        assert ids(await chain.elements(EDIT)) == ["se-a", "se-b"]
        assert chain.last_source == "redis"

    run(prefix, body)


def test_only_available_edit_and_rw_entries_with_id_and_url_are_placed(prefix: str) -> None:
    async def body(r: Redis) -> None:
        await r.put(
            entry("se-good", priority=5),
            entry(None, priority=1),  # registered, element_id not known yet
            entry("se-no-url", api_url=None, priority=1),
            entry("se-empty-url", api_url="", priority=1),
            entry("se-offline", is_available=False, priority=1),
            entry("se-degraded", status="degraded", is_available=False, priority=1),
            entry("se-ro", mode="ro", priority=1),
            entry("se-ar", mode="ar", status="maintenance", is_available=False, priority=1),
            entry("se-twice", priority=7),
            entry("se-twice", priority=2, api_url="http://second.example"),
            entry("se-both", mode="rw", priority=3, api_url="http://both-rw.example"),
            entry("se-both", mode="edit", priority=4, api_url="http://both-edit.example"),
        )
        registry = r.registry()
        edit = await registry.elements(EDIT)
        assert ids(edit) == ["se-both", "se-good", "se-twice"]
        assert edit[2].endpoint == "http://se-twice.example:8010"  # the first entry of an id
        assert ids(await registry.elements(RW)) == ["se-both"]
        # By id, whatever the mode or availability: unavailable is unhealthy.
        offline = await registry.element("se-offline")
        assert offline is not None
        assert (offline.mode, offline.healthy) == (EDIT, False)
        read_only = await registry.element("se-ro")
        assert read_only is not None
        assert (read_only.mode, read_only.healthy) == (ElementMode.RO, True)
        archive = await registry.element("se-ar")
        assert archive is not None
        assert archive.mode is ElementMode.AR
        both = await registry.element("se-both")
        assert both is not None
        assert (both.mode, both.endpoint) == (EDIT, "http://both-edit.example")
        assert await registry.element("se-no-url") is None
        assert await registry.element("se-empty-url") is None

    run(prefix, body)


def test_capacity_gives_the_status_by_the_modes_thresholds(prefix: str) -> None:
    async def body(r: Redis) -> None:
        await r.put(
            entry("se-critical", priority=1, capacity_bytes=1000, used_bytes=650),
            entry("se-rw", mode="rw", priority=1, capacity_bytes=1000, used_bytes=650),
            entry("se-full", priority=2, capacity_bytes=1000, used_bytes=1000),
            entry("se-unknown", priority=3, capacity_bytes=None, used_bytes=None),
            entry("se-ok", priority=4, capacity_bytes=1000, used_bytes=0),
        )
        thresholds = {EDIT: (50.0, 60.0, 70.0), RW: (85.0, 92.0, 98.0)}
        registry = r.registry(thresholds=thresholds)
        edit = {info.element_id: info for info in await registry.elements(EDIT)}
        assert {k: v.status for k, v in edit.items()} == {
            "se-critical": CapacityStatus.CRITICAL,
            "se-full": CapacityStatus.FULL,
            "se-unknown": CapacityStatus.FULL,  # no capacity known: no room known
            "se-ok": CapacityStatus.OK,
        }
        assert (edit["se-critical"].capacity_total, edit["se-critical"].capacity_free) == (
            1000,
            350,
        )
        assert (edit["se-unknown"].capacity_total, edit["se-unknown"].capacity_free) == (0, 0)
        [rw] = await registry.elements(RW)
        assert rw.status is CapacityStatus.OK  # 65 % is below rw's 85 %
        # Placement takes the critical one for a small file and never the unknown or full one.
        chosen = choose(list(edit.values()), mode=EDIT, size=10, open_circuits=(),
                        thresholds=thresholds[EDIT])  # fmt: skip
        assert ids(chosen) == ["se-critical", "se-ok"]

    run(prefix, body)


def test_the_legacy_keys_win_for_an_element_id_they_know(prefix: str) -> None:
    async def body(r: Redis) -> None:
        # Legacy: se-1 listed (rw, priority 5), se-full FULL (hash kept, out of the ZSET).
        await publish(r.client, element("se-1", 5), prefix=r.prefix)
        await publish(r.client, element("se-full", 1, status=CapacityStatus.FULL), prefix=r.prefix)
        await r.put(
            entry("se-1", mode="rw", priority=1, api_url="http://admin-view.example"),
            entry("se-full", mode="rw", priority=1, used_bytes=0),
            entry("se-2", mode="rw", priority=3),
            entry("se-0", mode="rw", priority=5),  # ties with legacy se-1: legacy first
        )
        registry = r.registry()
        found = await registry.elements(RW)
        assert [(i.element_id, i.priority) for i in found] == [
            ("se-2", 3),
            ("se-1", 5),
            ("se-0", 5),
        ]
        assert found[1] == element("se-1", 5)  # the legacy hash, not the Admin Module's view
        full = await registry.element("se-full")
        assert full is not None
        assert full.status is CapacityStatus.FULL
        one = await registry.element("se-1")
        assert one is not None
        assert one.endpoint == "http://se-1.example:8010"
        # The legacy hash expires (its writer stopped): the published entry takes over.
        await r.raw.delete(f"{r.prefix}storage:elements:se-1")
        await registry.invalidate()
        found = await registry.elements(RW)
        assert ids(found) == ["se-1", "se-2", "se-0"]
        assert found[0].endpoint == "http://admin-view.example"
        one = await registry.element("se-1")
        assert one is not None
        assert one.endpoint == "http://admin-view.example"

    run(prefix, body)


def test_the_admin_modules_event_drops_the_cache(prefix: str) -> None:
    async def body(r: Redis) -> None:
        registry = r.registry(clock=Clock())
        task = asyncio.create_task(registry.listen(retry_seconds=0.1))
        try:
            name = f"{r.prefix}artstore:service_discovery"
            for _ in range(100):
                if dict(await r.raw.pubsub_numsub(name)).get(name, 0) >= 1:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("listen() did not subscribe within 2 s")
            await asyncio.sleep(0.1)  # its post-subscribe invalidation
            await r.put(entry("se-a", priority=1), version=1)
            assert ids(await registry.elements(EDIT)) == ["se-a"]
            await r.put(entry("se-a", priority=1), entry("se-b", priority=2), version=2)
            await asyncio.sleep(0.2)
            assert ids(await registry.elements(EDIT)) == ["se-a"]  # cached
            assert await r.raw.publish(name, event("created", 2, 2)) == 1
            await until(registry, ["se-a", "se-b"])
            await r.put(entry("se-b", priority=2), version=3)
            assert await r.raw.publish(name, event("deleted", 3, 1)) == 1
            await until(registry, ["se-b"])
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(prefix, body)


async def until(registry: RedisRegistry, expected: list[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while (found := ids(await registry.elements(EDIT))) != expected:
        assert loop.time() < deadline, f"still {found}, not {expected}, 2 s after the event"
        await asyncio.sleep(0.02)


def test_the_key_takes_the_prefix_and_expires(prefix: str) -> None:
    async def body(r: Redis) -> None:
        await r.put(entry("se-a"))
        assert ids(await r.registry().elements(EDIT)) == ["se-a"]
        other = RedisRegistry(r.client, prefix=f"{r.prefix}other:")
        assert await other.elements(EDIT) == []
        assert await other.element("se-a") is None
        # The Admin Module stopped rewriting it: the key expires, the elements are gone.
        await r.raw.pexpire(r.key, 50)
        await asyncio.sleep(0.2)
        assert await r.registry().elements(EDIT) == []
        assert await r.registry().element("se-a") is None

    run(prefix, body)


BROKEN_DOCUMENTS = {
    "not JSON": "{storage_elements: [",
    "a list": "[]",
    "no list": json.dumps({"version": 1, "storage_elements": {"se-x": {}}}),
    "not UTF-8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("value", BROKEN_DOCUMENTS.values(), ids=BROKEN_DOCUMENTS.keys())
def test_a_broken_document_leaves_the_legacy_keys_working(
    prefix: str, value: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(r: Redis) -> None:
        await publish(r.client, element("se-legacy", 1), prefix=r.prefix)
        await r.raw.set(r.key, value)
        registry = r.registry()
        with caplog.at_level(logging.WARNING, logger="tusingest.registry"):
            assert ids(await registry.elements(RW)) == ["se-legacy"]
            assert await registry.element("se-legacy") == element("se-legacy", 1)
            assert await registry.element("se-x") is None
        assert any("artstore:storage_elements" in rec.getMessage() for rec in caplog.records)

    run(prefix, body)


def test_a_key_of_another_type_leaves_the_legacy_keys_working(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(r: Redis) -> None:
        await publish(r.client, element("se-legacy", 1), prefix=r.prefix)
        await r.raw.hset(r.key, mapping={"se-x": "{}"})  # WRONGTYPE for GET
        registry = r.registry()
        with caplog.at_level(logging.WARNING, logger="tusingest.registry"):
            assert ids(await registry.elements(RW)) == ["se-legacy"]
            assert await registry.element("se-x") is None
        assert any("cannot read artstore:storage_elements" in m for m in caplog.messages)

    run(prefix, body)


MALFORMED: dict[str, dict[str, Any]] = {
    "string priority": {"priority": "1"},
    "missing priority": {"priority": None},
    "negative capacity": {"capacity_bytes": -1},
    "boolean capacity": {"capacity_bytes": True},
    "fractional used": {"used_bytes": 1.5},
    "string availability": {"is_available": "yes"},
    "unknown mode": {"mode": "rwx"},
    "numeric element_id": {"element_id": 42},
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_entry_is_skipped(
    prefix: str, change: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def body(r: Redis) -> None:
        await r.put(entry("se-good", priority=2), entry("se-bad", **{"priority": 1, **change}))
        registry = r.registry()
        with caplog.at_level(logging.WARNING, logger="tusingest.registry"):
            assert ids(await registry.elements(EDIT)) == ["se-good"]
        assert any("skipping malformed element" in m for m in caplog.messages)

    run(prefix, body)


def test_open_storage_reads_the_published_list(prefix: str, tmp_path: Path) -> None:
    """The wiring: REDIS_KEY_PREFIX and the per-mode thresholds reach the Redis source."""

    async def body(r: Redis) -> None:
        await r.put(entry("se-a", priority=1, capacity_bytes=1000, used_bytes=650))
        settings = Settings.from_env(
            {
                "DATA_DIR": str(tmp_path),
                "REDIS_URL": redis_url(),
                "REDIS_KEY_PREFIX": r.prefix,
                "CAPACITY_EDIT_THRESHOLDS": "50,60,70",
            }
        )
        async with contextlib.AsyncExitStack() as stack:
            storage = await open_storage(settings, stack)
            [info] = await storage.chain.elements(EDIT)
            assert (info.element_id, info.status) == ("se-a", CapacityStatus.CRITICAL)
            assert storage.chain.last_source == "redis"
            found = await storage.chain.element("se-a")
            assert found == info

    run(prefix, body)
