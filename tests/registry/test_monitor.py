"""The capacity monitor against real Redis and SEs over real HTTP (leadership, status, health)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.rediskeys import drop_keys, new_prefix, redis_url, require_redis
from tusingest.domain import DEFAULT_THRESHOLDS, CapacityStatus, ElementInfo, ElementMode
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ElementServerSettings
from tusingest.registry.configs import ElementConfig, RedisElementConfigs
from tusingest.registry.monitor import CapacityMonitor, lock_key
from tusingest.registry.redis import RedisRegistry, channel, element_key, priority_key, publish

RW, EDIT = ElementMode.RW, ElementMode.EDIT


class ElementServer:
    """A reference SE (or any aiohttp app) on 127.0.0.1 in the test's event loop."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app)
        self.base = ""

    async def start(self) -> ElementServer:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()


@dataclass
class Env:
    client: aioredis.Redis  # bytes, as the server uses it
    raw: aioredis.Redis  # decode_responses, for assertions
    session: aiohttp.ClientSession
    prefix: str
    root: Path
    pubsub: Any  # subscribed to the discovery channel
    configs: RedisElementConfigs = field(init=False)
    servers: list[ElementServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.configs = RedisElementConfigs(self.client, self.prefix)

    def monitor(self, node: str = "node-a", **kwargs: Any) -> CapacityMonitor:
        kwargs.setdefault("thresholds", {RW: DEFAULT_THRESHOLDS, EDIT: DEFAULT_THRESHOLDS})
        kwargs.setdefault("timeout", 2.0)
        return CapacityMonitor(
            self.client, self.session, self.configs, prefix=self.prefix, node=node,
            **kwargs,
        )  # fmt: skip

    async def serve(self, app: web.Application) -> ElementServer:
        server = await ElementServer(app).start()
        self.servers.append(server)
        return server

    async def element(
        self, element_id: str, mode: ElementMode = RW, capacity: int = 1000, priority: int = 10
    ) -> ElementServer:
        """Start a reference SE and configure it (its endpoint given with /api/v1/)."""
        settings = ElementServerSettings(
            element_id, mode, self.root / element_id, capacity, priority, None
        )
        server = await self.serve(create_element_app(settings))
        endpoint = f"{server.base}/api/v1/"
        await self.configs.put(ElementConfig(element_id, mode, endpoint, priority))
        return server

    async def upload(self, server: ElementServer, size: int) -> str:
        form = aiohttp.FormData()
        form.add_field("file", b"x" * size, filename="f.bin", content_type="text/plain")
        async with self.session.post(f"{server.base}/api/v1/files/upload", data=form) as reply:
            assert reply.status == 201, await reply.text()
            return str((await reply.json())["file_id"])

    async def gc(self, server: ElementServer, file_id: str) -> None:
        async with self.session.delete(f"{server.base}/api/v1/gc/{file_id}") as reply:
            assert reply.status == 200, await reply.text()

    async def hash(self, element_id: str) -> dict[str, str]:
        found = await self.raw.hgetall(element_key(element_id, self.prefix))
        return {str(k): str(v) for k, v in found.items()}

    async def listed(self, mode: ElementMode) -> list[str]:
        return [str(m) for m in await self.raw.zrange(priority_key(mode, self.prefix), 0, -1)]

    async def announced(self) -> list[str]:
        """The actions announced since the last call."""
        found = []
        while (message := await self.pubsub.get_message(timeout=0.3)) is not None:
            if message["type"] == "message":
                found.append(json.loads(message["data"])["action"])
        return found

    async def registry(self, mode: ElementMode) -> list[ElementInfo]:
        return await RedisRegistry(self.client, prefix=self.prefix, cache_seconds=0).elements(mode)


def run(root: Path, body: Callable[[Env], Awaitable[None]]) -> None:
    """Run `body` with fresh clients under a fresh key prefix, dropped afterwards."""
    require_redis()
    prefix = new_prefix()

    async def main() -> None:
        client = aioredis.from_url(redis_url())
        raw = aioredis.from_url(redis_url(), decode_responses=True)
        session = aiohttp.ClientSession()
        pubsub = raw.pubsub()
        await pubsub.subscribe(channel(prefix))
        env = Env(client, raw, session, prefix, root, pubsub)
        try:
            await body(env)
        finally:
            for server in env.servers:
                await server.stop()
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await session.close()
            await client.aclose()
            await raw.aclose()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        drop_keys(prefix)


def by_id(infos: list[ElementInfo] | None) -> dict[str, ElementInfo]:
    assert infos is not None, "the monitor was expected to lead"
    return {info.element_id: info for info in infos}


def test_only_the_leader_publishes_and_release_hands_over(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.element("se-1")
        a, b = env.monitor("node-a", interval=50), env.monitor("node-b")
        assert by_id(await a.poll_once())["se-1"].healthy
        assert 140 < await env.raw.ttl(element_key("se-1", env.prefix)) <= 150  # 3 rounds
        assert await env.raw.get(lock_key(env.prefix)) == "node-a"
        assert 0 < await env.raw.ttl(lock_key(env.prefix)) <= 30
        await env.raw.delete(element_key("se-1", env.prefix))
        assert await b.poll_once() is None
        assert not b.is_leader
        assert await env.hash("se-1") == {}  # the follower wrote nothing
        assert await b.release() is False  # not its lock
        assert await env.raw.get(lock_key(env.prefix)) == "node-a"
        assert await a.release() is True
        assert await env.raw.get(lock_key(env.prefix)) is None
        assert "se-1" in by_id(await b.poll_once())
        assert await env.hash("se-1") != {}
        assert await a.poll_once() is None
        assert await env.raw.get(lock_key(env.prefix)) == "node-b"
        assert 80 < await env.raw.ttl(element_key("se-1", env.prefix)) <= 90  # never below 90 s

    run(tmp_path, body)


def test_a_dead_leaders_lock_expires_and_a_live_one_is_renewed(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.element("se-1")
        a, b = env.monitor("node-a", lock_seconds=2), env.monitor("node-b", lock_seconds=2)
        assert await a.poll_once() is not None
        for _ in range(2):  # 2.4 s in all, past the 2 s lock: renewal keeps it
            await asyncio.sleep(1.2)
            assert await b.poll_once() is None
            assert await a.poll_once() is not None
        # node-a dies without releasing: node-b takes over once the lock expires.
        await asyncio.sleep(2.2)
        assert await b.poll_once() is not None
        assert await a.poll_once() is None  # a late node-a must not take it back
        assert await env.raw.get(lock_key(env.prefix)) == "node-b"

    run(tmp_path, body)


def test_run_forever_keeps_one_leader_and_hands_over_on_cancel(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.element("se-1")
        monitors = [env.monitor(n, interval=0.2, lock_seconds=3) for n in ("node-a", "node-b")]
        tasks = [asyncio.create_task(m.run_forever()) for m in monitors]
        try:
            await asyncio.sleep(0.8)
            assert [m.is_leader for m in monitors].count(True) == 1
            leader = next(i for i, m in enumerate(monitors) if m.is_leader)
            follower = monitors[1 - leader]
            tasks[leader].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[leader]
            assert not monitors[leader].is_leader
            before = (await env.hash("se-1"))["last_updated"]
            deadline = time.monotonic() + 2.5  # the follower seeks the lock every second
            while not follower.is_leader:
                assert time.monotonic() < deadline, "the follower did not take over"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert (await env.hash("se-1"))["last_updated"] > before  # it publishes now
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert await env.raw.get(lock_key(env.prefix)) is None  # released on cancellation

    run(tmp_path, body)


def test_status_follows_thresholds_and_full_leaves_the_listing(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        se = await env.element("se-1", RW, capacity=1000)
        monitor = env.monitor()
        await env.upload(se, 860)
        info = by_id(await monitor.poll_once())["se-1"]
        assert (info.status, info.capacity_used, info.capacity_free) == ("warning", 860, 140)
        assert await env.listed(RW) == ["se-1"]
        more = await env.upload(se, 70)
        assert by_id(await monitor.poll_once())["se-1"].status is CapacityStatus.CRITICAL
        last = await env.upload(se, 60)  # 99 %
        assert by_id(await monitor.poll_once())["se-1"].status is CapacityStatus.FULL
        assert await env.listed(RW) == []
        assert await env.registry(RW) == []
        fields = await env.hash("se-1")  # still published, for operators and `elements list`
        assert (fields["capacity_status"], fields["capacity_percent"]) == ("full", "99.00")
        for file_id in (last, more):
            await env.gc(se, file_id)
        assert by_id(await monitor.poll_once())["se-1"].status is CapacityStatus.WARNING
        assert [i.element_id for i in await env.registry(RW)] == ["se-1"]

    run(tmp_path, body)


def test_thresholds_are_per_mode(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        for element_id, mode in (("se-edit", EDIT), ("se-rw", RW)):
            await env.upload(await env.element(element_id, mode, capacity=1000), 250)
        monitor = env.monitor(thresholds={EDIT: (10.0, 20.0, 30.0), RW: DEFAULT_THRESHOLDS})
        infos = by_id(await monitor.poll_once())
        assert infos["se-edit"].status is CapacityStatus.CRITICAL
        assert infos["se-rw"].status is CapacityStatus.OK

    run(tmp_path, body)


def test_a_stopped_element_is_unhealthy_after_one_poll(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        se = await env.element("se-1", capacity=1000)
        await env.element("se-2", capacity=1000, priority=20)
        await env.upload(se, 300)
        monitor = env.monitor()
        assert all(i.healthy for i in by_id(await monitor.poll_once()).values())
        assert [i.healthy for i in await env.registry(RW)] == [True, True]
        await se.stop()
        env.servers.remove(se)
        info = by_id(await monitor.poll_once())["se-1"]
        assert not info.healthy
        assert (info.capacity_total, info.capacity_used) == (1000, 300)  # last known kept
        assert "se-1" in monitor.last_errors
        seen = {i.element_id: i.healthy for i in await env.registry(RW)}
        assert seen == {"se-1": False, "se-2": True}
        # A new leader that never reached it keeps the capacity the registry last showed.
        await monitor.release()
        again = by_id(await env.monitor("node-b").poll_once())["se-1"]
        assert (again.healthy, again.capacity_total, again.capacity_used) == (False, 1000, 300)

    run(tmp_path, body)


def test_an_element_never_reached_is_published_unhealthy_and_empty(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        gone = await ElementServer(web.Application()).start()
        await gone.stop()  # a port nobody listens on any more
        await env.configs.put(ElementConfig("se-x", EDIT, gone.base, 1))
        monitor = env.monitor()
        info = await monitor.probe(ElementConfig("se-x", EDIT, gone.base, 1))
        assert (info.healthy, info.capacity_total, info.capacity_free) == (False, 0, 0)
        assert not by_id(await monitor.poll_once())["se-x"].healthy
        assert (await env.hash("se-x"))["health_status"] == "unhealthy"
        assert await env.listed(EDIT) == []

    run(tmp_path, body)


def fake_element(capacity: Any, ready: int = 200, delay: float = 0.0) -> web.Application:
    """An SE whose answers the test chooses: for faults the reference SE cannot show."""

    async def capacity_handler(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(delay)
        return web.json_response(capacity)

    async def ready_handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "x"}, status=ready)

    app = web.Application()
    app.router.add_get("/api/v1/capacity", capacity_handler)
    app.router.add_get("/health/ready", ready_handler)
    return app


# 100 bytes are reserved by the filesystem: what fits is `available`, not total − used.
GOOD = {"mode": "rw", "capacity": {"total": 1000, "used": 100, "available": 800}}


@pytest.mark.parametrize(
    ("capacity", "ready", "delay", "problem"),
    [
        (GOOD, 200, 0.0, None),
        (GOOD, 503, 0.0, "/health/ready answered 503"),
        (GOOD | {"mode": "ro"}, 200, 0.0, "reports mode 'ro'"),
        ({"mode": "rw", "capacity": {"total": 1000}}, 200, 0.0, "malformed"),
        ([1, 2], 200, 0.0, "not a JSON object"),
        (GOOD, 200, 1.5, "no answer in time"),
    ],
)
def test_faults_make_an_element_unhealthy(
    tmp_path: Path, capacity: Any, ready: int, delay: float, problem: str | None
) -> None:
    async def body(env: Env) -> None:
        server = await env.serve(fake_element(capacity, ready, delay))
        await env.configs.put(ElementConfig("se-f", RW, server.base, 1))
        monitor = env.monitor(timeout=0.5)
        started = time.monotonic()
        info = by_id(await monitor.poll_once())["se-f"]
        assert time.monotonic() - started < 1.4  # bounded by the per-request timeout
        assert info.healthy is (problem is None)
        if problem is None:
            assert (info.capacity_total, info.capacity_used, info.capacity_free) == (1000, 100, 800)
        else:
            assert problem in monitor.last_errors["se-f"]
        health = (await env.hash("se-f"))["health_status"]
        assert health == ("healthy" if info.healthy else "unhealthy")

    run(tmp_path, body)


def test_announces_only_when_something_changed(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        se = await env.element("se-1", capacity=1000)
        monitor = env.monitor()
        await monitor.poll_once()
        assert await env.announced() == ["updated"]  # first publication
        await monitor.poll_once()
        assert await env.announced() == []  # nothing changed
        await env.upload(se, 100)
        await monitor.poll_once()
        assert await env.announced() == []  # capacity moved, status did not
        await env.upload(se, 800)
        await monitor.poll_once()
        assert await env.announced() == ["updated"]  # ok → warning
        await se.stop()
        env.servers.remove(se)
        await monitor.poll_once()
        assert await env.announced() == ["updated"]  # healthy → unhealthy
        await monitor.poll_once()
        assert await env.announced() == []
        await env.configs.put(ElementConfig("se-1", RW, se.base, 3))
        await monitor.poll_once()
        assert await env.announced() == ["updated"]  # priority: the listing order changed

    run(tmp_path, body)


def test_removed_configs_are_withdrawn(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.element("se-1")
        await env.element("se-2", priority=20)
        monitor = env.monitor()
        await monitor.poll_once()
        assert await env.listed(RW) == ["se-1", "se-2"]
        assert await env.announced() == ["updated"]
        assert await env.configs.remove("se-1")
        assert set(by_id(await monitor.poll_once())) == {"se-2"}
        assert await env.announced() == ["updated"]
        assert await env.listed(RW) == ["se-2"]
        assert await env.hash("se-1") == {}

    run(tmp_path, body)


def test_without_any_config_other_writers_are_left_alone(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        other = ElementInfo("se-o", RW, 1, "http://o.example", 10, 0, 10, CapacityStatus.OK, True)
        await publish(env.client, other, prefix=env.prefix)
        assert await env.monitor().poll_once() == []
        assert await env.listed(RW) == ["se-o"]

    run(tmp_path, body)
