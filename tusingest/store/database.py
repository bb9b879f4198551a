"""The database: engines for SQLite and PostgreSQL, and its schema checked (or, embedded,
migrated) at startup. alembic is loaded only when a migration is due."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tusingest.errors import ConfigError

# The head of migrations/versions; a test keeps the two in step.
HEAD = "0003"


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and its directory created.

    Every statement here is a single atomic statement (compare-and-set updates, inserts,
    reads), so connections run in autocommit: no BEGIN/COMMIT round trips around each one.
    """
    if is_sqlite(url):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer at a time, and a second connection waiting for
        # the write lock sleeps in SQLite's busy handler (up to 100 ms a turn). Serialised in
        # process, every statement runs as soon as the one before it is done.
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=0,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # A fixed pool: connections that overflow it would be opened and closed per request.
    return create_async_engine(
        url, pool_size=20, max_overflow=0, pool_recycle=3600, isolation_level="AUTOCOMMIT"
    )


def transactional(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, but with real transactions (the default engine autocommits)."""
    level = "SERIALIZABLE" if engine.dialect.name == "sqlite" else "READ COMMITTED"
    return engine.execution_options(isolation_level=level)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's alembic revision; None for an empty (never migrated) database."""
    async with engine.connect() as conn:
        exists = await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version"))
        if not exists:
            return None
        row = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).first()
    return None if row is None else str(row[0])


async def ensure_schema(engine: AsyncEngine, url: str) -> None:
    """The embedded SQLite database migrates itself; PostgreSQL, shared by a cluster, must be
    migrated explicitly (`tusingest migrate`) and a schema that is behind stops startup."""
    try:
        current = await current_revision(engine)
    except (OSError, DBAPIError) as exc:
        raise ConfigError("DATABASE_URL", f"cannot reach the database: {_reason(exc)}") from None
    if current == HEAD:
        return
    if is_sqlite(url):
        await migrate(url)
        return
    raise ConfigError(
        "DATABASE_URL",
        f"the database schema is at revision {current or 'none'}, this version needs "
        f"{HEAD}: run `tusingest migrate` first",
    )


async def migrate(url: str) -> str:
    """Upgrade the schema to head (`tusingest migrate`); returns the head revision."""
    path = _sqlite_path(url) if is_sqlite(url) else None
    if path is not None:
        # The embedded database lives in a data dir that may not exist yet.
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    # alembic stays resident (~11 MiB) once imported: load it only when a migration is due.
    from tusingest.store import schema

    try:
        await schema.upgrade(url)
    except (OSError, DBAPIError) as exc:
        raise ConfigError("DATABASE_URL", f"cannot migrate: {_reason(exc)}") from None
    return schema.head_revision()


def _sqlite_path(url: str) -> Path | None:
    path = sa.make_url(url).database
    return Path(path) if path and path != ":memory:" else None


def _reason(exc: OSError | DBAPIError) -> str:
    # The driver's message ("database x does not exist"), without SQLAlchemy's boilerplate.
    return str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
