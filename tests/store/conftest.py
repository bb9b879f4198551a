"""Fixtures for the store contract tests: every Locker and SessionStore adapter, opened fresh
for each test over a real database (PostgreSQL: one fresh database per test module)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.conftest import BACKENDS
from tusingest.ports import Locker, SessionStore
from tusingest.settings.uploads import normalise_database_url
from tusingest.store import schema
from tusingest.store.db import Database, open_database
from tusingest.store.locks import MemoryLocker
from tusingest.store.pglocks import PgLocker, asyncpg_dsn
from tusingest.store.sql import SqlSessionStore

LOCKERS = ("memory", "postgres")
# How long a patient request waits for a lease: short, so the timeouts stay cheap.
WAIT_SECONDS = 1.0

# Each test opens its adapter inside its own event loop (`asyncio.run`), so the fixtures hand
# out openers: `async with locker() as lock: ...` builds the adapter and tears it down.
OpenLocker = Callable[[], AbstractAsyncContextManager[Locker]]


class OpenNode(Protocol):
    """Opens one more PgLocker "node" on the module's shared database."""

    def __call__(self, *, lease_seconds: float = ...) -> AbstractAsyncContextManager[Locker]: ...


@dataclass(frozen=True)
class Sessions:
    """A SessionStore adapter and the database under it (to read the `operations` it queues)."""

    store: SessionStore
    db: Database

    async def queued(self, upload_id: str) -> list[tuple[str, str, str]]:
        """(kind, subject, status) of the operations queued for `upload_id`."""
        rows = await self.db.fetch(
            "SELECT kind, subject, status FROM operations WHERE subject = $1", upload_id
        )
        return [(row["kind"], row["subject"], row["status"]) for row in rows]


OpenSessions = Callable[[], AbstractAsyncContextManager[Sessions]]


def _migrated(url: str) -> str:
    asyncio.run(schema.upgrade(url))
    return url


@pytest.fixture(scope="module")
def pg_database(new_pg_database: Callable[[], str]) -> str:
    """A fresh, migrated PostgreSQL database for this test module (asyncpg URL)."""
    return _migrated(normalise_database_url("DATABASE_URL", new_pg_database()))


@pytest.fixture(scope="module")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, migrated SQLite database for this test module (aiosqlite URL)."""
    path: Path = tmp_path_factory.mktemp("store") / "db.sqlite"
    return _migrated(normalise_database_url("DATABASE_URL", f"sqlite:///{path}"))


async def _empty(db: Database) -> None:
    """Start every test from empty tables (the database is shared by the module's tests)."""
    for table in ("operations", "uploads"):
        await db.execute(f"DELETE FROM {table}")


@asynccontextmanager
async def _memory_locker() -> AsyncIterator[Locker]:
    yield MemoryLocker(WAIT_SECONDS)


@asynccontextmanager
async def _pg_locker(url: str, *, lease_seconds: float = 15.0) -> AsyncIterator[Locker]:
    db = await open_database(url)
    locker = PgLocker(db, asyncpg_dsn(url), wait_seconds=WAIT_SECONDS, lease_seconds=lease_seconds)
    await locker.start()
    try:
        yield locker
    finally:
        await locker.stop()
        await db.close()


@asynccontextmanager
async def _sessions(url: str) -> AsyncIterator[Sessions]:
    db = await open_database(url)
    try:
        await _empty(db)
        yield Sessions(SqlSessionStore(db), db)
    finally:
        await db.close()


@pytest.fixture(params=LOCKERS)
def locker(request: pytest.FixtureRequest) -> OpenLocker:
    """Opens the Locker adapter under test: in-process, or PostgreSQL-backed."""
    if request.param == "memory":
        return _memory_locker
    url: str = request.getfixturevalue("pg_database")

    def open_pg() -> AbstractAsyncContextManager[Locker]:
        return _pg_locker(url)

    return open_pg


@pytest.fixture
def pg_nodes(pg_database: str) -> OpenNode:
    """Opens PgLocker nodes: each call is one more node sharing the module's database."""

    def open_node(*, lease_seconds: float = 15.0) -> AbstractAsyncContextManager[Locker]:
        return _pg_locker(pg_database, lease_seconds=lease_seconds)

    return open_node


_DATABASES = {"sqlite": "sqlite_database", "postgres": "pg_database"}


@pytest.fixture(params=BACKENDS)
def sessions(request: pytest.FixtureRequest) -> OpenSessions:
    """Opens the SessionStore adapter under test on SQLite or PostgreSQL, tables emptied."""
    url: str = request.getfixturevalue(_DATABASES[request.param])

    def open_sessions() -> AbstractAsyncContextManager[Sessions]:
        return _sessions(url)

    return open_sessions
