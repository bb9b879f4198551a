"""File registration with the Admin Module on the stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.adminmodule import AdminModule, serve_admin_module
from tests.conftest import Keys
from tusingest.domain import CatalogEntry
from tusingest.elements.token import AdminToken
from tusingest.errors import TransientError
from tusingest.registry.admin import AdminFiles, AdminRejected

CREATED = datetime(2025, 1, 2, 15, 30, 45, tzinfo=UTC)
FILES = "/api/v1/files"


def entry(**changes: Any) -> CatalogEntry:
    base = CatalogEntry(
        file_id=str(uuid.uuid4()),
        upload_id="u-1",
        element_id="se-01",
        storage_filename="report_alice_20250102T153045_x.pdf",
        storage_path="2025/01/02/15/",
        original_filename="отчёт 2025.pdf",
        content_type="application/pdf",
        declared_type="application/pdf",
        size=5000,
        stored_size=3100,
        codec="br",
        md5="ab" * 16,
        sha256="cd" * 32,
        stored_sha256="EF" * 32,
        retention_policy="temporary",
        owner="alice",
        created_at=CREATED,
    )
    return replace(base, **changes)


@dataclass
class Setup:
    admin: AdminModule
    files: AdminFiles
    session: aiohttp.ClientSession


@asynccontextmanager
async def setup(keys: Keys, **kw: Any) -> AsyncIterator[Setup]:
    async with serve_admin_module(keys.private, **kw) as admin, aiohttp.ClientSession() as session:
        token = AdminToken(admin.url, session, "sa_ingest", "secret")
        yield Setup(admin, AdminFiles(admin.url, session, token), session)


def test_temporary_file_is_registered_with_its_ttl(keys: Keys) -> None:
    item = entry()

    async def scenario() -> None:
        async with setup(keys) as s:
            await s.files.register(item, ttl_days=30)
            record = s.admin.files[item.file_id]
            sent = {k: v for k, v in record.items() if k not in _SERVER_FIELDS}
            assert sent == {
                "file_id": item.file_id,
                "original_filename": "отчёт 2025.pdf",
                "storage_filename": item.storage_filename,
                "file_size": 3100,  # the stored (compressed) bytes
                "checksum_sha256": "ef" * 32,  # of the stored bytes, lower-cased
                "content_type": "application/pdf",
                "description": None,
                "retention_policy": "temporary",
                "ttl_expires_at": (CREATED + timedelta(days=30)).isoformat(),
                "ttl_days": 30,
                "storage_element_id": "se-01",
                "storage_path": "2025/01/02/15/",
                "compressed": True,
                "compression_algorithm": "br",
                "original_size": 5000,
                "uploaded_by": "alice",
                "upload_source_ip": None,
                "user_metadata": {
                    "upload_id": "u-1",
                    "md5": "ab" * 16,
                    "sha256": "cd" * 32,
                    "original_size": 5000,
                },
            }
            assert record["is_temporary"] is True
            assert record["is_deleted"] is False

    asyncio.run(scenario())


_SERVER_FIELDS = {
    "finalized_at",
    "created_at",
    "updated_at",
    "deleted_at",
    "deletion_reason",
    "is_deleted",
    "is_finalized",
    "is_temporary",
}


def test_permanent_file_has_no_ttl_and_long_names_are_cut(keys: Keys) -> None:
    item = entry(
        retention_policy="permanent",
        codec=None,
        stored_size=5000,
        original_filename="n" * 600 + ".txt",
        owner="o" * 150,
        created_at=CREATED.replace(tzinfo=None),  # naive: taken as UTC
    )

    async def scenario() -> None:
        async with setup(keys) as s:
            await s.files.register(item, ttl_days=30)  # ignored for permanent files
            record = s.admin.files[item.file_id]
            assert (record["ttl_days"], record["ttl_expires_at"]) == (None, None)
            assert (record["compressed"], record["compression_algorithm"]) == (False, None)
            assert record["original_filename"] == "n" * 500
            assert record["uploaded_by"] == "o" * 100
            assert record["is_temporary"] is False

            with pytest.raises(ValueError, match="ttl_days"):
                await s.files.register(entry(), ttl_days=None)
            assert len(s.admin.files) == 1

    asyncio.run(scenario())


def test_registering_twice_is_idempotent(keys: Keys) -> None:
    item = entry()

    async def scenario() -> None:
        async with setup(keys) as s:
            await s.files.register(item, ttl_days=30)
            first = dict(s.admin.files[item.file_id])
            await s.files.register(item, ttl_days=30)  # 400 "already exists", then GET: ours
            assert s.admin.files[item.file_id] == first
            assert s.admin.count("POST", FILES) == 2
            assert s.admin.count("GET", f"{FILES}/{item.file_id}") == 1

    asyncio.run(scenario())


def test_another_registration_of_the_id_is_a_conflict(keys: Keys) -> None:
    item = entry()

    async def scenario() -> None:
        async with setup(keys) as s:
            await s.files.register(item, ttl_days=30)
            for other in (replace(item, element_id="se-02"), replace(item, stored_sha256="0" * 64)):
                with pytest.raises(AdminRejected) as caught:
                    await s.files.register(other, ttl_days=30)
                assert (caught.value.code, caught.value.status) == ("registration_conflict", 502)
                assert not isinstance(caught.value, TransientError)
            assert s.admin.files[item.file_id]["storage_element_id"] == "se-01"

            # A deleted registration still holds the id, and no longer reads as ours.
            await s.files.unregister(item.file_id)
            with pytest.raises(AdminRejected, match="deleted") as caught:
                await s.files.register(item, ttl_days=30)
            assert caught.value.code == "registration_conflict"

    asyncio.run(scenario())


def test_invalid_registration_is_rejected_with_the_detail(keys: Keys) -> None:
    async def scenario() -> None:
        async with setup(keys) as s:
            with pytest.raises(AdminRejected) as caught:
                await s.files.register(entry(), ttl_days=400)  # 1–365
            assert (caught.value.code, caught.value.status) == ("registration_rejected", 502)
            assert "422" in caught.value.message
            assert "ttl_days" in caught.value.message
            assert not isinstance(caught.value, TransientError)
            assert s.admin.files == {}

    asyncio.run(scenario())


def test_a_role_without_registration_rights_is_rejected(keys: Keys) -> None:
    async def scenario() -> None:
        async with setup(keys, role="readonly") as s:
            with pytest.raises(AdminRejected, match="403") as caught:
                await s.files.register(entry(), ttl_days=30)
            assert caught.value.code == "registration_rejected"

    asyncio.run(scenario())


def test_server_errors_and_outages_are_transient(keys: Keys) -> None:
    item = entry()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there

    async def scenario() -> None:
        async with setup(keys) as s:
            s.admin.fail_registration = 1
            with pytest.raises(TransientError, match="Failed to register file"):
                await s.files.register(item, ttl_days=30)
            assert item.file_id not in s.admin.files
            await s.files.register(item, ttl_days=30)  # the retry goes through
            assert item.file_id in s.admin.files

            s.admin.down = True
            with pytest.raises(TransientError):
                await s.files.register(entry(), ttl_days=30)
            with pytest.raises(TransientError):
                await s.files.unregister(item.file_id)
            s.admin.down = False
            assert s.admin.files[item.file_id]["is_deleted"] is False

            token = AdminToken(s.admin.url, s.session, "sa_ingest", "secret")
            gone = AdminFiles(f"http://127.0.0.1:{port}", s.session, token, timeout=2)
            with pytest.raises(TransientError, match="unreachable"):
                await gone.register(entry(), ttl_days=30)

    asyncio.run(scenario())


class Expired:
    """Implements `TokenSource`: an expired token until asked for a fresh one."""

    def __init__(self, admin: AdminModule) -> None:
        self.admin = admin
        self.calls: list[bool] = []

    async def token(self, *, fresh: bool = False) -> str:
        self.calls.append(fresh)
        return self.admin.mint(ttl=3600 if fresh else -60)


def test_a_refused_token_is_renewed_once(keys: Keys) -> None:
    item = entry()

    async def scenario() -> None:
        async with setup(keys) as s:
            token = Expired(s.admin)
            files = AdminFiles(s.admin.url, s.session, token)
            await files.register(item, ttl_days=30)
            assert token.calls == [False, True]
            assert s.admin.count("POST", FILES) == 2
            assert item.file_id in s.admin.files

    asyncio.run(scenario())


def test_unregister_soft_deletes_and_absent_is_fine(keys: Keys) -> None:
    item = entry()

    async def scenario() -> None:
        async with setup(keys) as s:
            await s.files.register(item, ttl_days=30)
            await s.files.unregister(item.file_id)
            record = s.admin.files[item.file_id]
            assert record["is_deleted"] is True
            assert record["deleted_at"] is not None
            await s.files.unregister(item.file_id)  # again: fine
            await s.files.unregister(str(uuid.uuid4()))  # never registered: 404, fine
            before = len(s.admin.requests)
            await s.files.unregister("not-a-uuid")  # nothing can be registered under it
            assert len(s.admin.requests) == before
            path = f"{FILES}/{item.file_id}"
            assert s.admin.count("DELETE", path) == 2

    asyncio.run(scenario())
