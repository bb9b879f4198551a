"""The Admin Module registry of available storage elements against the stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from tests.adminmodule import AdminModule, running_admin_module, serve_admin_module
from tests.conftest import Keys
from tests.tokens import StaticToken
from tusingest.domain import CapacityStatus, ElementMode
from tusingest.elements.token import AdminToken
from tusingest.errors import TransientError
from tusingest.registry.admin import AdminRegistry, AdminRejected

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
async def admin(status: int) -> AsyncIterator[str]:
    """A bare server answering the element list with `status` (the stand-in never fails so)."""

    async def available(request: web.Request) -> web.StreamResponse:
        return web.json_response({"detail": "Database error"}, status=status)

    app = web.Application()
    app.router.add_get("/api/v1/internal/storage-elements/available", available)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


class Expired:
    """Implements `TokenSource`: an expired token until asked for a fresh one (or always)."""

    def __init__(self, admin: AdminModule, *, renewable: bool = True) -> None:
        self.admin = admin
        self.renewable = renewable
        self.calls: list[bool] = []

    async def token(self, *, fresh: bool = False) -> str:
        self.calls.append(fresh)
        return self.admin.mint(ttl=3600 if fresh and self.renewable else -60)


def test_lists_usable_elements_by_priority_with_the_token(keys: Keys) -> None:
    async def scenario() -> None:
        async with (
            serve_admin_module(keys.private, elements=ELEMENTS) as stand_in,
            aiohttp.ClientSession() as session,
        ):
            token = AdminToken(stand_in.url, session, "sa_ingest", "secret")
            registry = AdminRegistry(stand_in.url, session, token)
            elements = await registry.elements(ElementMode.EDIT)
            assert [e.element_id for e in elements] == ["se-01", "se-02"]
            assert elements[1].status is CapacityStatus.WARNING
            assert elements[1].capacity_free == 100
            assert elements[0].endpoint == "http://se1"
            assert await registry.elements(ElementMode.RW) == []
            assert await registry.elements(ElementMode.RO) == []
            path = "/api/v1/internal/storage-elements/available"
            assert stand_in.count("GET", path) == 2  # RO is never asked for
            assert stand_in.count("POST", "/api/v1/auth/token") == 1

    asyncio.run(scenario())


def test_a_refused_token_is_renewed_once(keys: Keys) -> None:
    path = "/api/v1/internal/storage-elements/available"

    async def scenario() -> None:
        async with (
            serve_admin_module(keys.private, elements=ELEMENTS) as stand_in,
            aiohttp.ClientSession() as session,
        ):
            token = Expired(stand_in)
            elements = await AdminRegistry(stand_in.url, session, token).elements(ElementMode.EDIT)
            assert [e.element_id for e in elements] == ["se-01", "se-02"]
            assert token.calls == [False, True]
            assert stand_in.count("GET", path) == 2

            stuck = Expired(stand_in, renewable=False)
            with pytest.raises(AdminRejected) as caught:
                await AdminRegistry(stand_in.url, session, stuck).elements(ElementMode.EDIT)
            assert caught.value.code == "admin_unauthorized"
            assert not isinstance(caught.value, TransientError)
            assert stuck.calls == [False, True]  # no loop
            assert stand_in.count("GET", path) == 4

    asyncio.run(scenario())


def test_503_means_none_available_and_500_is_transient(keys: Keys) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            async with serve_admin_module(keys.private, elements=ELEMENTS) as stand_in:
                stand_in.down = True
                registry = AdminRegistry(stand_in.url, session, StaticToken(stand_in.mint()))
                assert await registry.elements(ElementMode.EDIT) == []
                stand_in.down = False
                assert len(await registry.elements(ElementMode.EDIT)) == 2
            async with admin(500) as url:
                with pytest.raises(TransientError, match="Database error"):
                    await AdminRegistry(url, session, StaticToken("t")).elements(ElementMode.EDIT)

    asyncio.run(scenario())


def test_an_unreachable_admin_module_is_transient() -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            registry = AdminRegistry("http://127.0.0.1:9", session, StaticToken("t"), timeout=2)
            with pytest.raises(TransientError):
                await registry.elements(ElementMode.EDIT)

    asyncio.run(scenario())


def test_the_stand_in_serves_the_contract_from_its_own_thread(keys: Keys) -> None:
    """The stand-in other tests rely on (tokens, available elements, file registration),
    driven synchronously."""
    with running_admin_module(keys.private) as stand_in:
        stand_in.add_element("se-e", mode="edit", priority=20, capacity_bytes=1000, used_bytes=900)
        stand_in.add_element("se-r", mode="rw", priority=10, capacity_bytes=None)
        stand_in.add_element("se-down", mode="edit", priority=1, health_status="unhealthy")
        stand_in.add_element("se-ro", mode="ro", priority=1)
        api = f"{stand_in.url}/api/v1"
        auth = {"Authorization": f"Bearer {stand_in.mint()}"}

        def ids(**query: str) -> list[str]:
            response = requests.get(
                f"{api}/internal/storage-elements/available", params=query, headers=auth, timeout=10
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["total"] == len(body["storage_elements"])
            return [e["element_id"] for e in body["storage_elements"]]

        assert ids() == ["se-r", "se-e"]  # edit and rw, by priority, healthy only
        assert ids(mode="edit") == ["se-e"]
        assert ids(mode="ro") == []
        assert ids(min_free_bytes="200") == ["se-r"]  # unknown capacity is not filtered
        missing = requests.get(f"{api}/internal/storage-elements/available", timeout=10)
        assert (missing.status_code, missing.json()) == (401, {"detail": "Not authenticated"})
        one = requests.get(f"{api}/internal/storage-elements/se-down", headers=auth, timeout=10)
        assert one.json()["health_status"] == "unhealthy"
        unknown = requests.get(f"{api}/internal/storage-elements/se-x", headers=auth, timeout=10)
        assert unknown.status_code == 404

        token_url = f"{api}/auth/token"
        form = {"client_id": "sa_ingest", "client_secret": "secret"}
        assert requests.post(token_url, data=form, timeout=10).status_code == 422
        wrong = requests.post(token_url, json=form | {"client_secret": "x"}, timeout=10)
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"] == 'Bearer error="invalid_client"'
        issued = requests.post(token_url, json=form, timeout=10).json()
        assert (issued["token_type"], issued["expires_in"]) == ("Bearer", 1800)

        body: dict[str, Any] = {
            "file_id": str(uuid.uuid4()), "original_filename": "a.txt", "storage_filename": "a",
            "file_size": 1, "checksum_sha256": "A" * 64, "retention_policy": "permanent",
            "ttl_days": 3, "storage_element_id": "se-r", "storage_path": "2025/01/02/15/",
        }  # fmt: skip
        files = f"{api}/files"
        headers = {"Authorization": f"Bearer {issued['access_token']}"}
        refused = requests.post(files, json=body, headers=headers, timeout=10)
        assert refused.status_code == 422, refused.text
        assert "must be None for permanent" in str(refused.json()["detail"])
        created = requests.post(files, json=body | {"ttl_days": None}, headers=headers, timeout=10)
        assert created.status_code == 201, created.text
        assert created.json()["checksum_sha256"] == "a" * 64
        again = requests.post(files, json=body | {"ttl_days": None}, headers=headers, timeout=10)
        assert again.json() == {"detail": f"File with ID {body['file_id']} already exists"}
        stand_in.down = True
        assert (
            requests.get(f"{files}/{body['file_id']}", headers=headers, timeout=10).status_code
            == 503
        )
