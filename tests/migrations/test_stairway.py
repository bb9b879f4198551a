"""Stairway: every revision upgrades, downgrades and upgrades again, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import BACKENDS
from tusingest.settings.app import Settings
from tusingest.store import database, schema
from tusingest.store.db import open_database
from tusingest.store.tables import metadata


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, new_pg_database: Callable[[], str]
) -> str:
    raw = (
        f"sqlite:///{tmp_path / 'stairway.db'}" if request.param == "sqlite" else new_pg_database()
    )
    return Settings.from_env({"DATABASE_URL": raw}).database.url


def _revisions() -> list[tuple[str, str]]:
    """(revision, down_revision or 'base') from first to last."""
    script = ScriptDirectory.from_config(schema.alembic_config("sqlite://"))
    steps = [(r.revision, r.down_revision or "base") for r in script.walk_revisions()]
    steps.reverse()
    return [(rev, str(down)) for rev, down in steps]


async def _current(url: str) -> str | None:
    db = await open_database(url)
    try:
        return await database.current_revision(db)
    finally:
        await db.close()


async def _diff(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), metadata)
            )
    finally:
        await engine.dispose()


def test_stairway(database_url: str) -> None:
    revisions = _revisions()
    assert revisions, "no migrations found"
    for rev, down in revisions:
        asyncio.run(schema.upgrade(database_url, rev))
        assert asyncio.run(_current(database_url)) == rev
        asyncio.run(schema.downgrade(database_url, down))
        assert asyncio.run(_current(database_url)) == (None if down == "base" else down)
        asyncio.run(schema.upgrade(database_url, rev))
    assert asyncio.run(_current(database_url)) == schema.head_revision()


def test_head_matches_tables(database_url: str) -> None:
    asyncio.run(schema.upgrade(database_url))
    assert asyncio.run(_diff(database_url)) == []


def test_code_knows_the_head_revision(database_url: str) -> None:
    assert schema.head_revision() == database.HEAD
    asyncio.run(schema.upgrade(database_url))

    assert asyncio.run(_current(database_url)) == database.HEAD


def test_a_url_with_libpq_sslmode_migrates_and_serves(new_pg_database: Callable[[], str]) -> None:
    """`?sslmode=` is what libpq users write: both the migration (SQLAlchemy) and the server's
    pool (asyncpg) take it."""
    raw = new_pg_database() + "?sslmode=disable"
    url = Settings.from_env({"DATABASE_URL": raw}).database.url
    revision = asyncio.run(database.migrate(url))
    assert revision == database.HEAD

    async def opened() -> str | None:
        db = await database.open_checked(url)
        try:
            return await database.current_revision(db)
        finally:
            await db.close()

    assert asyncio.run(opened()) == database.HEAD
