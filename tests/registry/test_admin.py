"""The Admin Module registry against a real HTTP server speaking the contract (§3.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tusingest.domain import CapacityStatus, ElementMode
from tusingest.errors import TransientError
from tusingest.registry.admin import AdminRegistry

ELEMENTS: list[dict[str, Any]] = [
    {"id": 2, "element_id": "se-02", "name": "b", "mode": "edit", "priority": 200,
     "api_url": "http://se2", "capacity_bytes": 1000, "used_bytes": 900,
     "health_status": "healthy", "capacity_status": "warning"},
    {"id": 1, "element_id": "se-01", "name": "a", "mode": "edit", "priority": 100,
     "api_url": "http://se1", "capacity_bytes": 1000, "used_bytes": 0,
     "health_status": "healthy", "capacity_status": "ok"},
    {"id": 3, "element_id": None, "name": "no id", "mode": "edit", "priority": 1,
     "api_url": "http://se3", "capacity_bytes": 1, "used_bytes": 0,
     "health_status": "healthy", "capacity_status": "ok"},
    {"id": 4, "element_id": "se-04", "name": "bad", "mode": "edit", "priority": "x",
     "api_url": "http://se4", "capacity_bytes": 1, "used_bytes": 0,
     "health_status": "healthy", "capacity_status": "ok"},
]  # fmt: skip


@asynccontextmanager
async def admin(status: int = 200) -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def available(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if status != 200:
            return web.json_response({"detail": "down"}, status=status)
        mode = request.query.get("mode")
        items = [e for e in ELEMENTS if e["mode"] == mode]
        return web.json_response({"storage_elements": items, "total": len(items)})

    app = web.Application()
    app.router.add_get("/api/v1/internal/storage-elements/available", available)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


async def _token() -> str:
    return "sa-token"


def test_lists_usable_elements_by_priority_with_the_token() -> None:
    async def scenario() -> None:
        async with admin() as (url, seen), aiohttp.ClientSession() as session:
            registry = AdminRegistry(url, session, _token)
            elements = await registry.elements(ElementMode.EDIT)
            assert [e.element_id for e in elements] == ["se-01", "se-02"]
            assert elements[1].status is CapacityStatus.WARNING
            assert elements[1].capacity_free == 100
            assert seen[0].headers["Authorization"] == "Bearer sa-token"
            assert seen[0].query["mode"] == "edit"
            assert await registry.elements(ElementMode.RW) == []
            assert await registry.elements(ElementMode.RO) == []

    asyncio.run(scenario())


def test_503_means_none_available_and_500_is_transient() -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            async with admin(503) as (url, _):
                assert await AdminRegistry(url, session, _token).elements(ElementMode.EDIT) == []
            async with admin(500) as (url, _):
                with pytest.raises(TransientError):
                    await AdminRegistry(url, session, _token).elements(ElementMode.EDIT)

    asyncio.run(scenario())


def test_an_unreachable_admin_module_is_transient() -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            registry = AdminRegistry("http://127.0.0.1:9", session, _token, timeout=2)
            with pytest.raises(TransientError):
                await registry.elements(ElementMode.EDIT)

    asyncio.run(scenario())
